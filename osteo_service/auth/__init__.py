"""Who may use the screening service (issue 26, docs/service.md): the modes (OSTEO_AUTH_MODE), the roles,
passwords, bearer tokens, server-side sessions, the sign-in throttle, proxy headers and OpenID Connect,
one job per module; the routes take one guard each (osteo_service.auth.guards)."""
