"""The worker's pieces that need no server: its configuration, its throughput figures, its cache's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from raddraft.config import ConfigError, load_config
from raddraft.worker.cache import InstanceCache
from raddraft.worker.client import InstanceRef, job_from
from raddraft.worker.drafting import Throughput
from raddraft.worker.main import worker_engine_config, worker_token


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "raddraft.toml"
    path.write_text(text)
    return path


def test_the_worker_section_sets_batch_lease_model_and_provider_for_the_engine(tmp_path) -> None:
    path = write_config(tmp_path, '[engine]\nvariant = "int8"\nproviders = ["cpu"]\n\n'
                                  '[worker]\nserver = "https://site:8443"\nbatch = 8\nlease_s = 60\n'
                                  f'model = "{tmp_path / "bundle"}"\nproviders = ["cuda", "cpu"]\n')
    config = load_config(path)
    assert (config.worker.batch, config.worker.lease_s, config.worker.renew_every_s) == (8, 60.0, 20.0)
    engine = worker_engine_config(config).engine
    assert (engine.model, engine.providers, engine.variant, engine.batch_size) == \
        (tmp_path / "bundle", ("cuda", "cpu"), "int8", 8)
    assert config.engine.batch_size == 1  # the workstation's engine is untouched


@pytest.mark.parametrize(("text", "message"), [
    ("[worker]\nbatch = 0\n", "worker.batch: must be between 1 and 64"),
    ("[worker]\nlease_s = 2\n", "worker.lease_s: must be between 10 and 3600"),
    ('[worker]\nserver = "site:8443"\n', "worker.server: must be an https://"),
    ("[worker]\nbatches = 4\n", "unknown key 'worker.batches'"),
])
def test_bad_worker_settings_stop_with_the_key_named(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, text))


def test_the_token_is_read_from_its_file(tmp_path) -> None:
    (tmp_path / "token").write_text("secret-token\n")
    config = load_config(write_config(tmp_path, f'[worker]\ntoken_file = "{tmp_path / "token"}"\n'))
    assert worker_token(config.worker) == "secret-token"


def test_throughput_counts_idle_time_between_batches_and_forgets_old_ones() -> None:
    meter = Throughput(window_s=600.0)
    meter.add(seconds=10.0, studies=4, new_tokens=400, now=1000.0)
    meter.add(seconds=10.0, studies=4, new_tokens=400, now=1030.0)  # 10 s idle before it
    report = meter.report(now=1030.0)
    assert report == {"studies_per_minute": 60.0 * 8 / 40.0, "tokens_per_s": 40.0}
    # ten minutes on, only the second batch is in the window: 4 studies since it began (600 s ago)
    assert meter.report(now=1620.0)["studies_per_minute"] == pytest.approx(60.0 * 4 / 600.0, abs=0.01)
    assert meter.report(now=5000.0) == {"studies_per_minute": 0.0, "tokens_per_s": 0.0}


def test_cached_files_are_named_by_uid_hashes_never_by_tag_values(tmp_path) -> None:
    cache = InstanceCache(tmp_path)
    ref = InstanceRef("1.2.3.4", "1.2.3.4.5")
    path = cache.path_of("1.2.3", ref)
    assert path.parent == cache.study_folder("1.2.3") and "1.2.3" not in path.name
    assert cache.path_of("1.2.3", InstanceRef("1.2.3.4", "1.2.3.4.6")) != path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    cache.drop("1.2.3")
    assert not cache.study_folder("1.2.3").exists()


def test_a_claimed_job_reads_the_servers_answer() -> None:
    job = job_from({"study_uid": "1.2", "lease_id": "abc", "lease_expires": 12.5,
                    "instances": [{"series_uid": "1.2.1", "sop_instance_uid": "1.2.1.1", "view_position": "PA"}]})
    assert (job.study_uid, job.lease_id, job.lease_expires, job.instances) == \
        ("1.2", "abc", 12.5, (InstanceRef("1.2.1", "1.2.1.1"),))
