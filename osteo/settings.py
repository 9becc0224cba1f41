"""All settings in one object, read from the environment (nothing happens at import time)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, overload

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from osteo.errors import UserError
from osteo.etl.scope import BODY_PARTS, KEYWORDS, MODALITIES, ScopeRules

REPO_ROOT = Path(__file__).resolve().parent.parent
ROI_MIN_CONFIDENCE = 0.8  # a localiser box at least this confident exports like a person's
MIN_PRODUCTION_KEY_BYTES = 32  # HMAC-SHA256 keys shorter than its 32-byte output are refused in production


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OSTEO_", extra="ignore")

    # OSTEO_HOME moves every store at once (database, var, data, MLflow store and artifacts,
    # Prefect home); each one below can still be set on its own. Default: the checkout.
    home: Path = REPO_ROOT
    # the stores default to places under home (pydantic passes the fields read so far to each factory)
    var_dir: Path = Field(default_factory=lambda data: data["home"] / "var")
    database_url: str = ""
    data_dir: Path = Field(default_factory=lambda data: data["home"] / "data")
    pseudonym_key: str = ""
    # production refuses to invent a pseudonym key; the demo keeps one in var/
    production: bool = False

    mlflow_tracking_uri: str = Field(default="", validation_alias="MLFLOW_TRACKING_URI")
    # a tracking server with MLflow's basic-auth app: the user osteo works as (docs/production.md: the workers'
    # osteo-promoter, the only user that may move `champion`); the password is never printed or logged
    mlflow_tracking_username: str = Field(default="", validation_alias="MLFLOW_TRACKING_USERNAME")
    mlflow_tracking_password: SecretStr = Field(default=SecretStr(""), validation_alias="MLFLOW_TRACKING_PASSWORD")
    mlflow_artifact_root: Path = Field(default_factory=lambda data: data["home"] / "mlruns" / "artifacts")
    mlflow_experiment: str = "osteo-screening"
    registered_model: str = "osteo-classifier"
    roi_model: str = "osteo-roi"  # the registered femoral-neck localiser
    roi_experiment: str = "osteo-roi"

    # data rules (docs/design.md)
    pair_window_days: int = 183
    osteoporosis_t: float = -2.5
    normal_t: float = -1.0
    bmd_young_mean: float = 0.858  # NHANES III young-women femoral neck, g/cm2
    bmd_young_sd: float = 0.120
    test_year: int = 2022
    # training: the operating point is the highest threshold whose out-of-fold validation recall of
    # osteoporosis reaches this; a challenger takes the champion alias only on at least this many test images
    target_recall: float = 0.90
    min_test_images: int = 20

    # scope: what counts as a hip radiograph (osteo/etl/scope.py); a list is "CR,DX" or ["CR", "DX"]
    scope_modalities: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(MODALITIES))
    scope_body_parts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(BODY_PARTS))
    scope_keywords: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(KEYWORDS))
    scope_accept_unknown_body_part: bool = False  # True: no body part and no keyword is taken as a hip

    # export
    export_size: int = 256
    roi_margin: float = 0.15
    metal_threshold: float = 0.005  # fraction of ROI pixels at metal level
    blur_threshold: float = 6.0  # Laplacian std of the ROI below this is blurred
    # a localiser box at or above this confidence exports like a person's; below, a person checks it
    roi_min_confidence: float = ROI_MIN_CONFIDENCE

    # files per ingest task: a Prefect task run costs ~50 ms of API round trips, and 1000 headers
    # are ~1-2 s of work (200 made the flow 1.26x the direct calls on 10k files)
    ingest_batch_size: int = 1000
    # threads for the walk's listings and the rerun's stats (osteo/ingest/discovery.py): 0 chooses 16 on a
    # network file system (NFS, SMB, ...: a round trip each) and 1 elsewhere
    io_threads: int = 0
    # images per export task (~2 s of work per worker here, at ~110 images/s); the unit Dask
    # workers share out
    export_batch_size: int = 200
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    dask_address: str = ""

    # `osteo screen` (osteo/screening/): images per task (each read, located and cropped, their crops scored in
    # one classifier call; the unit Dask workers share out), and which results go back to the PACS as an SR and
    # a secondary capture: positive (flagged only) | all | none
    screen_batch_size: int = 64
    screen_model: str = "models:/osteo-classifier@champion"  # the version that screens (a staging site may pin one)
    screen_push: Literal["positive", "all", "none"] = "positive"
    # the screening service (`osteo serve`, osteo_service/)
    serve_model: str = "models:/osteo-classifier@champion"
    serve_localiser: str = "models:/osteo-roi@champion"
    serve_reload_seconds: float = 60.0  # how often the registry alias is checked for a new version
    serve_upload_limit_mb: float = 30.0
    serve_max_pixels: int = 50_000_000  # larger images are refused from their header, before decoding
    # where the seed sent patients to book (Taichung Veterans General Hospital's online registration)
    serve_booking_url: str = "https://www.vghtc.gov.tw/"  # the hospital site; set the booking page
    serve_store_uploads: Path | None = None  # uploads are kept only when this names a folder
    serve_audit: bool = True  # one row per prediction in prediction_audit (no patient data)
    serve_secret: str = ""  # signs the form's CSRF token; random per process when empty
    # runtime threads per worker process; 0: the cores shared out among `osteo serve --workers`
    serve_threads: int = 0

    # who may use the service (osteo_service/auth/, docs/service.md): none (the demo: open, with a banner) |
    # users (osteo's own accounts) | proxy (the hospital's proxy signs people in) | oidc (its OpenID Connect provider)
    auth_mode: Literal["none", "users", "proxy", "oidc"] = "none"
    auth_public_selfcheck: bool = True  # the self-assessment (OSTA, IOF) open to anyone, as the seed's page was
    auth_idle_minutes: float = 30.0  # a session unused this long ends
    auth_session_hours: float = 12.0  # and every session ends this long after its sign-in, however busy
    auth_cookie_secure: bool = True  # False only for a test over http://127.0.0.1 (a Secure cookie needs HTTPS)
    # sign-in attempts answered per account name and per client address within the window; more are refused
    auth_signin_per_user: int = 5
    auth_signin_per_address: int = 20
    auth_signin_window_minutes: float = 15.0
    # proxy mode: the headers the proxy sets, the addresses (or networks) whose headers are believed, and the
    # groups' roles as "group=role,group2=role2" (or JSON); a request from anywhere else is anonymous
    auth_proxy_user_header: str = "X-Forwarded-User"
    auth_proxy_groups_header: str = "X-Forwarded-Groups"
    auth_proxy_trusted: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    auth_proxy_group_roles: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # oidc mode: the provider (its /.well-known/openid-configuration), this client, the ID token's groups claim
    # and the groups' roles; the redirect URL as the browser reaches /signin/callback (default: from the request)
    auth_oidc_issuer: str = ""
    auth_oidc_client_id: str = ""
    auth_oidc_client_secret: str = ""
    auth_oidc_groups_claim: str = "groups"
    auth_oidc_group_roles: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    auth_oidc_redirect_url: str = ""

    # the PACS (osteo/pacs/, docs/production.md): DICOMweb when its URL is set, else DIMSE when host, port
    # and AE title are; neither: `osteo pacs pull` refuses and the nightly pull does nothing
    pacs_dicomweb_url: str = ""  # e.g. https://pacs.example/dicom-web (QIDO-RS and WADO-RS)
    pacs_host: str = ""
    pacs_port: int = 0
    pacs_aet: str = ""  # the PACS's AE title (the called AE)
    aet: str = "OSTEO"  # osteo's own AE title (the calling AE; the PACS must know it for C-GET)
    # <data_dir>/inbox: what the pull and the receiver file, the refresh reads
    pacs_inbox: Path = Field(default_factory=lambda data: data["data_dir"] / "inbox")
    pacs_lookback_days: int = 7  # a pull without --since asks for the studies of the last days
    pacs_timeout_s: float = 30.0  # per request or DIMSE message
    # `osteo pacs receive`: the C-STORE listener and the calling AE titles it takes ("A,B"; PACS AET alone if empty)
    pacs_receive_port: int = 11112
    pacs_allowed_aets: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("scope_modalities", "scope_body_parts", "scope_keywords", "pacs_allowed_aets", mode="before")
    @classmethod
    def _list_from_text(cls, value):
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return value

    @field_validator("auth_proxy_trusted", mode="before")
    @classmethod
    def _addresses_from_text(cls, value):
        return cls._list_from_text(value)

    @field_validator("auth_proxy_group_roles", "auth_oidc_group_roles", mode="before")
    @classmethod
    def _mapping_from_text(cls, value):
        """{"group": "role"} from "group=role,group2=role2" or JSON."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p.partition("=") for p in text.split(",") if p.strip()]
            return {k.strip(): v.strip() for k, _, v in pairs}
        return value

    def scope_rules(self) -> ScopeRules:
        """The scope settings as the rules the header readers take (a small frozen dataclass)."""
        return ScopeRules(tuple(self.scope_modalities), tuple(self.scope_body_parts), tuple(self.scope_keywords),
                          self.scope_accept_unknown_body_part)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / 'osteo.sqlite'}"

    def resolved_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home / 'mlruns' / 'mlflow.db'}"

    @overload
    def resolved_pseudonym_key(self, *, create: Literal[True] = True) -> bytes: ...
    @overload
    def resolved_pseudonym_key(self, *, create: bool) -> bytes | None: ...

    def resolved_pseudonym_key(self, *, create: bool = True) -> bytes | None:
        """The key of the patient pseudonyms; the local default is generated once and kept.

        create=False only reads: None when no key was set or generated yet (a look-up never
        invents a key that no ingest used).
        """
        if self.pseudonym_key:
            key = self.pseudonym_key.encode()
            if self.production and len(key) < MIN_PRODUCTION_KEY_BYTES:
                raise UserError(  # the length only: a key is never printed
                    "weak_pseudonym_key",
                    f"OSTEO_PSEUDONYM_KEY is {len(key)} bytes: production mode needs at least "
                    f"{MIN_PRODUCTION_KEY_BYTES} (a short key lets pseudonyms be guessed back to patient IDs); "
                    "set it to the site's key, e.g. 64 hex characters from `python -c \"import secrets; "
                    "print(secrets.token_hex(32))\"` (docs/production.md)",
                )
            return key
        if self.production:
            raise UserError(
                "missing_pseudonym_key",
                "OSTEO_PSEUDONYM_KEY is not set: production mode refuses to pseudonymise patients with an "
                "ad-hoc key (pseudonyms must stay stable across runs); set OSTEO_PSEUDONYM_KEY to the site's "
                "key (docs/production.md)",
            )
        key_file = self.var_dir / "pseudonym.key"
        if not key_file.exists():
            if not create:
                return None
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        return key_file.read_text().strip().encode()


def session_factory(settings: Settings, *, create: bool = False):
    """The database of these settings (see db.session); `create=True` creates missing tables."""
    from db.engine import SchemaOutdated
    from db.session import session_factory as factory_for

    try:
        return factory_for(settings.resolved_database_url(), create=create)
    except SchemaOutdated as exc:
        raise UserError("database_outdated", str(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


@contextmanager
def settings_from(env: dict[str, str | None]) -> Iterator[Settings]:
    """Settings read with `env` laid over the environment for the block (None unsets a variable),
    then the environment restored (tests, bench)."""
    old = {k: os.environ.get(k) for k in env}
    _set_environ(env)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        _set_environ(old)
        get_settings.cache_clear()


def _set_environ(env: dict[str, str | None]) -> None:
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
