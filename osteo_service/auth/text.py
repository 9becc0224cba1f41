# ruff: noqa: E501 - a table of sentences reads better one per line
"""The sign-in pages' words (osteo_service.i18n takes them into its one table)."""

from __future__ import annotations

AUTH_TEXT: dict[str, dict[str, str]] = {
    "open_banner": {"zh-TW": "此頁面未啟用登入：能連到本服務的任何人都可使用（示範模式，OSTEO_AUTH_MODE=none）。",
                    "en": "This page is open: anyone who can reach this service may use it (demo mode, OSTEO_AUTH_MODE=none)."},
    "nav_signin": {"zh-TW": "登入", "en": "Sign in"},
    "nav_signout": {"zh-TW": "登出", "en": "Sign out"},
    "signed_in_as": {"zh-TW": "已登入：{name}", "en": "Signed in as {name}"},
    "signin_heading": {"zh-TW": "登入", "en": "Sign in"},
    "signin_needed": {"zh-TW": "此頁面需要登入。", "en": "This page needs you to sign in."},
    "signin_name": {"zh-TW": "帳號", "en": "User name"},
    "signin_password": {"zh-TW": "密碼", "en": "Password"},
    "signin_submit": {"zh-TW": "登入", "en": "Sign in"},
    "signin_oidc": {"zh-TW": "以醫院帳號登入", "en": "Sign in with the hospital account"},
    "signin_proxy": {"zh-TW": "請經由醫院的入口網站登入後再開啟此頁面。", "en": "Sign in through the hospital's portal, then open this page again."},
    "signin_failed": {"zh-TW": "帳號或密碼不正確，或帳號已停用。", "en": "The user name or password is wrong, or the account is disabled."},
    "signin_throttled": {"zh-TW": "登入嘗試次數過多，請於 {minutes} 分鐘後再試。", "en": "Too many sign-in attempts: try again in {minutes} minutes."},
    "signin_oidc_failed": {"zh-TW": "醫院帳號登入未完成，請再試一次。", "en": "The sign-in with the hospital account did not complete: please try again."},
    "signed_out": {"zh-TW": "您已登出。", "en": "You are signed out."},
    "forbidden_heading": {"zh-TW": "沒有權限", "en": "Not allowed"},
    "forbidden_text": {"zh-TW": "您的帳號（{name}）沒有使用此頁面的權限（需要「{role}」角色）。請洽系統管理員。",
                       "en": "Your account ({name}) may not use this page (it needs the {role} role). Ask the administrator."},
    # the guards' refusal codes (osteo_service.auth.guards), as every refusal code has words on the page
    "err_signin_required": {"zh-TW": "請先登入。", "en": "Sign in first."},
    "err_invalid_token": {"zh-TW": "存取權杖無效（偽造、過期或已撤銷）。", "en": "The access token is not valid (forged, expired or revoked)."},
    "err_forbidden": {"zh-TW": "您的帳號沒有此功能的權限。", "en": "Your account may not use this."},
    "err_csrf": {"zh-TW": "表單已過期，請重新整理頁面後再試一次。", "en": "The form has expired: reload the page and try again."},
}
