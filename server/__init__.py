"""The site server (issue 20): the HTTPS API over one store and its PostgreSQL index, users and tokens, the
audit log, study claims and drafting-job leases for workers. docs/site-api.md is its contract."""
