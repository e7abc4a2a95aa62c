"""The admin console over HTTP: the /admin page and the JSON API under /api/admin.

:func:`install_admin` puts it on the app; each concern builds its own router:

- ``access``: who is asking (bearer token or session cookie + CSRF token), sign-in throttling;
- ``sessions``: sign in, sign out, who am I, the admin password;
- ``configuration``: the business configuration (profile, hours, services, staff, escalation,
  tools, prompts, providers);
- ``knowledge``: the knowledge-base articles;
- ``review``: calls, recordings, appointments, callbacks, the audit log, and /api/calls;
- ``privacy``: deleting one caller's data on request;
- ``outbound``: outbound calls (/api/outbound) and "call back now" for a message;
- ``page``: the /admin page, its assets, and the errors as the page shows them;
- ``applier``: what a config change sets off (cached values refreshed, the local LLM re-warmed).

Auth: ``Authorization: Bearer <admin token>`` (scripts), or a session cookie from signing in on
the page with the admin token or the admin password (set from the page after the first sign-in
with the token). Requests that change something with a session cookie must carry the session's
CSRF token in ``X-CSRF-Token`` (and, when the browser sends one, a same-site ``Origin``).
401 = not signed in; 403 = signed in but the request is not acceptable (CSRF, cross-site origin).

Config changes apply to the next call: each call loads the business when it starts and keeps it
(agent/session.py). After a change the local LLM's cached prompt prefix is re-evaluated in the
background, once no call is running, so the next call does not pay for it.
"""

from __future__ import annotations

from fastapi import FastAPI

from agent.admin.access import AdminAccess
from agent.admin.applier import AdminHost, ConfigApplier, local_prefix, warm_local_brain
from agent.admin.configuration import build_config_router
from agent.admin.knowledge import build_kb_router
from agent.admin.outbound import build_outbound_router
from agent.admin.page import install_error_handlers, install_page
from agent.admin.privacy import build_privacy_router
from agent.admin.review import build_records_router, build_review_router
from agent.admin.sessions import build_session_router
from tools.admin.auth import AdminAuth
from tools.admin.review import AdminReview
from tools.admin.service import AdminService
from tools.admin.views import AdminViews

__all__ = [
    "AdminHost",
    "ConfigApplier",
    "build_records_router",
    "install_admin",
    "local_prefix",
    "warm_local_brain",
]


def install_admin(app: FastAPI, state: AdminHost) -> ConfigApplier:
    """Add the /admin page, the /api/admin routes and their error handlers to ``app``."""
    service = AdminService(state.db)
    views = AdminViews(state.db)
    auth = AdminAuth(state.db)
    applier = ConfigApplier(state)
    access = AdminAccess(auth, state.admin_token, state.settings.public_url)
    app.include_router(build_session_router(access, auth, state.settings))
    app.include_router(build_config_router(access, service, views, applier, state))
    app.include_router(build_kb_router(access, service, views))
    app.include_router(build_review_router(access, service, AdminReview(state.db), state.settings))
    app.include_router(build_privacy_router(access, state.db, state.settings))
    app.include_router(build_outbound_router(access, state.db))
    install_page(app)
    install_error_handlers(app)
    return applier
