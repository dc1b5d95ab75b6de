"""`raddraft worker`: a drafting worker of the site server (docs/site-api.md).

It claims studies waiting to be drafted (a lease it renews while it drafts), fetches their instances over
the API into a local cache, drafts several at once (engine.batched), writes each draft back and reports
its model, provider, batch and throughput. A worker that dies loses nothing: the server offers its
studies again once their leases expire.
"""
