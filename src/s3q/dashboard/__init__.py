"""``s3q dashboard``: a server-rendered web view of one queue and its fleet.

:mod:`~s3q.dashboard.snapshot` gathers what the pages show at a bounded cost (also used by
the exporter, :mod:`s3q.gauges`); :mod:`~s3q.dashboard.failed` is the failed/ view and its
actions, :mod:`~s3q.dashboard.actions` their confirmations and their record;
:mod:`~s3q.dashboard.security` the authentication, CSRF protection and bind rule;
:mod:`~s3q.dashboard.app` the Flask application (imported only by ``s3q dashboard``).
"""
