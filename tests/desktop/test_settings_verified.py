"""Settings are checked against the world before they are saved: a folder that is no bundle and a port in
use are refused (nothing reaches the configuration file); a PACS that does not answer C-ECHO warns."""

from __future__ import annotations

import socket

import pytest

from desktop.settings_dialog import SettingsDialog


def dialog_of(window, qtbot) -> SettingsDialog:
    dialog = SettingsDialog(window.ws.config, window.ws.check_settings, window, verify=window.ws.verify_settings,
                            background=window.background)
    qtbot.addWidget(dialog)
    return dialog


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_folder_that_is_no_bundle_and_a_taken_port_are_refused(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    config_file = tmp_path / "raddraft.toml"
    before = config_file.read_text()
    dialog = dialog_of(window, qtbot)
    (tmp_path / "photos").mkdir()
    dialog.fields["engine.model"].setText(str(tmp_path / "photos"))
    dialog.accept()
    qtbot.waitUntil(lambda: "is not a model bundle" in dialog.error.text(), timeout=10_000)
    assert dialog.result() != SettingsDialog.DialogCode.Accepted and dialog.ok.isEnabled()
    with pytest.raises(Exception, match="model.json"):  # the save path refuses it too
        window.ws.apply_settings({"engine.model": str(tmp_path / "photos")})
    assert config_file.read_text() == before
    dialog.fields["engine.model"].setText("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        dialog.fields["node.host"].setText("127.0.0.1")
        dialog.fields["node.port"].setValue(taken.getsockname()[1])
        dialog.accept()
        qtbot.waitUntil(lambda: "is not free" in dialog.error.text(), timeout=10_000)
    assert dialog.result() != SettingsDialog.DialogCode.Accepted
    assert config_file.read_text() == before


def test_a_pacs_that_does_not_answer_warns_and_can_be_saved_anyway(desktop, pacs, qtbot, no_model):
    window = desktop(**no_model)
    dialog = dialog_of(window, qtbot)
    dialog.fields["pacs.ae_title"].setText("PACS")
    dialog.fields["pacs.host"].setText("127.0.0.1")
    dialog.fields["pacs.port"].setValue(free_port())  # nobody listens there
    dialog.accept()
    qtbot.waitUntil(lambda: dialog.ok.text() == "Save anyway", timeout=15_000)
    assert "does not answer" in dialog.error.text() and dialog.result() != SettingsDialog.DialogCode.Accepted
    dialog.accept()
    assert dialog.result() == SettingsDialog.DialogCode.Accepted
    answering = dialog_of(window, qtbot)
    answering.fields["pacs.ae_title"].setText("PACS")
    answering.fields["pacs.host"].setText("127.0.0.1")
    answering.fields["pacs.port"].setValue(pacs.port)  # a real DICOM node: C-ECHO succeeds
    answering.accept()
    qtbot.waitUntil(lambda: answering.result() == SettingsDialog.DialogCode.Accepted, timeout=15_000)
    assert answering.error.text() == ""


def test_a_problem_fixed_in_the_settings_leaves_the_banner(desktop, qtbot, tmp_path):
    (tmp_path / "broken").mkdir()
    window = desktop(**{"engine.model": str(tmp_path / "broken"), "engine.draft_on_stable": False})
    qtbot.waitUntil(lambda: "model.json" in window.banner.text.text(), timeout=5_000)
    from raddraft.resources import embedded_model_dir

    window.apply_settings({"engine.model": str(embedded_model_dir())})  # fixed: a real bundle
    qtbot.waitUntil(lambda: window.ws.model is not None, timeout=60_000)
    qtbot.waitUntil(lambda: "model.json" not in window.banner.text.text(), timeout=10_000)
    assert not window.banner.isVisible() or window.banner.text.text().strip()
