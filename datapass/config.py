"""Configuration: defaults in code, ``DATAPASS_*`` environment overrides, validated at start.

Each setting is declared once in :data:`SETTINGS` (name, default, parser, French description);
the README's configuration table is generated from it (``flask --app app datapass config``).

Every setting read from ``DATAPASS_X`` may instead come from a file named by ``DATAPASS_X_FILE``
(its content, stripped): the container and systemd conventions for secrets (Docker secrets,
``LoadCredential=``). Setting both is an error. ``SECRET_KEY`` and ``DATABASE_URL`` are read too
(the ``DATAPASS_`` names win); a ``postgres://`` URL is given psycopg 3's driver.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"

# Values that appear in documentation or examples and must never protect a real deployment.
KNOWN_DEFAULTS = {
    "",
    "dev",
    "changeme",
    "change-me",
    "secret",
    "development",
    "datapass",
    "please-change-me",
}


class ConfigError(RuntimeError):
    """A configuration that must not run; its message is one line, for the operator."""


def _bool(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "oui", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "non", "off", ""}:
        return False
    raise ValueError(f"booléen attendu, reçu {value!r}")


@dataclass(frozen=True)
class Setting:
    key: str  # key in app.config
    env: str  # environment variable
    default: Any
    parse: Callable[[str], Any]
    doc: str


def _s(key: str, default: Any, parse: Callable[[str], Any], doc: str, env: str | None = None):
    return Setting(key, env or f"DATAPASS_{key}", default, parse, doc)


SETTINGS: list[Setting] = [
    _s("ENV", "development", str, "`development`, `production` ou `testing`."),
    _s(
        "SECRET_KEY",
        None,
        str,
        "Clé de signature des sessions et des liens (obligatoire en production ; "
        "générée dans `instance/` en développement). `SECRET_KEY` est aussi lu.",
    ),
    _s(
        "MASTER_KEY",
        None,
        str,
        "Clé maîtresse (32 octets en base64) qui chiffre les clés de signature, les secrets "
        "TOTP et webhooks, et dérive la clé HMAC de l'audit (obligatoire en production).",
    ),
    _s(
        "DATABASE_URL",
        f"sqlite:///{INSTANCE / 'datapass.db'}",
        str,
        "Base de données SQLAlchemy (`postgresql+psycopg://…` en production). `DATABASE_URL` "
        "est aussi lu (`DATAPASS_DATABASE_URL` l'emporte) ; `postgres://` et `postgresql://` "
        "y deviennent `postgresql+psycopg://` (psycopg 3).",
    ),
    _s(
        "BASE_URL",
        None,
        str,
        "URL publique : liens des courriels, `iss` des jetons (obligatoire en production ; "
        "hors production, par défaut `http://HOST:PORT` du serveur lancé, `PORT` et `HOST` "
        "étant ceux de `make run`).",
    ),
    _s(
        "CONTACT_EMAIL",
        "datapass@api.gouv.fr",
        str,
        "Adresse de contact de l'équipe (déclaration d'accessibilité : signaler un défaut).",
    ),
    _s("MAIL_BACKEND", "file", str, "`file` (fichiers `.eml` dans `instance/mail/`) ou `smtp`."),
    _s("MAIL_DIR", str(INSTANCE / "mail"), str, "Dossier des courriels en mode `file`."),
    _s("MAIL_FROM", "Datapass <ne-pas-repondre@datapass.gouv.fr>", str, "Expéditeur."),
    _s("SMTP_HOST", "localhost", str, "Serveur SMTP."),
    _s("SMTP_PORT", 25, int, "Port SMTP."),
    _s("SMTP_USER", "", str, "Utilisateur SMTP (vide : sans authentification)."),
    _s("SMTP_PASSWORD", "", str, "Mot de passe SMTP."),
    _s("SMTP_STARTTLS", False, _bool, "STARTTLS vers le serveur SMTP."),
    _s("SMTP_TIMEOUT", 10, int, "Délai maximal d'une connexion SMTP, en secondes."),
    _s("SESSION_HOURS", 12, int, "Durée absolue d'une session, en heures."),
    _s("LOGIN_MAX_FAILURES", 5, int, "Échecs de connexion tolérés par compte et par adresse…"),
    _s("LOGIN_WINDOW_MINUTES", 15, int, "…sur cette fenêtre glissante, en minutes."),
    _s("REAUTH_MINUTES", 10, int, "Validité d'une ré-authentification avant un acte sensible."),
    _s("RESET_LINK_MINUTES", 60, int, "Validité d'un lien de réinitialisation de mot de passe."),
    _s("INVITE_LINK_HOURS", 72, int, "Validité d'un lien d'invitation."),
    _s("ARGON2_TIME_COST", 3, int, "Argon2id : nombre de passes du hachage des mots de passe."),
    _s("ARGON2_MEMORY_KIB", 65536, int, "Argon2id : mémoire du hachage, en Kio."),
    _s("DEMO_SKIP_MFA", True, _bool, "Hors production : comptes de démonstration sans TOTP."),
    _s("TRUSTED_PROXIES", 0, int, "Nombre de mandataires inverses de confiance (X-Forwarded-For)."),
    _s(
        "CLIENT_AUTH_CACHE_SECONDS",
        30,
        int,
        "Mémoire d'une authentification réussie de client machine (0 : aucune), en secondes.",
    ),
    _s(
        "SCHEDULER_TIMEZONE",
        "Europe/Paris",
        str,
        "Fuseau horaire des tâches planifiées (quotidiennes à heure fixe).",
    ),
    # --- jetons (tokens) et webhooks ---
    _s("TOKEN_ALGORITHM", "ES256", str, "Algorithme de signature des jetons : `ES256` ou `EdDSA`."),
    _s("TOKEN_LIFETIME_MONTHS", 18, int, "Durée de vie d'un jeton, en mois calendaires."),
    _s("KEY_ROTATION_MONTHS", 6, int, "Rotation planifiée des clés de signature, en mois."),
    _s(
        "KEY_PUBLISH_DAYS",
        7,
        int,
        "Jours de publication d'une clé suivante dans le JWKS avant qu'elle ne signe.",
    ),
    _s("TOKEN_LINK_HOURS", 4, int, "Validité du lien à usage unique vers le contact technique."),
    _s("TOKEN_MAX_GRACE_DAYS", 30, int, "Délai de grâce maximal lors d'une rotation de jeton."),
    _s(
        "TOKEN_USE_FLUSH_SECONDS",
        60,
        int,
        "Intervalle minimal d'écriture de la dernière utilisation d'un jeton, en secondes.",
    ),
    _s(
        "USAGE_FLUSH_SECONDS",
        1.0,
        float,
        "Intervalle d'écriture, par processus et en tâche de fond, des appels d'introspection "
        "comptés en mémoire, en secondes : un processus tué net (SIGKILL) en perd au plus cet "
        "intervalle (plus l'écriture en cours) ; un arrêt normal les écrit (0 : écriture dans "
        "la requête, pour les tests).",
    ),
    _s(
        "INTROSPECTION_CACHE_SECONDS",
        1.0,
        float,
        "Cache, par processus, de l'état d'un jeton lu par l'introspection (0 : aucun).",
    ),
    _s("REVOCATIONS_MAX_AGE", 300, int, "Durée de cache de la liste de révocation, en secondes."),
    _s("LEAKS_PER_MINUTE", 20, int, "Signalements de fuite acceptés par adresse et par minute."),
    _s("WEBHOOK_TIMEOUT", 10, int, "Délai maximal d'un appel de webhook, en secondes."),
    _s("WEBHOOK_MAX_FAILURES", 5, int, "Échecs consécutifs avant désactivation d'un webhook."),
    _s("WEBHOOK_MAX_ATTEMPTS", 15, int, "Tentatives d'une livraison de webhook avant abandon."),
    _s(
        "WEBHOOK_ALLOW_PRIVATE",
        False,
        _bool,
        "Autorise les webhooks vers des adresses locales ou privées (développement, tests).",
    ),
    # --- demandes d'habilitation (authorizations) ---
    _s("UPLOAD_MAX_MB", 10, int, "Taille maximale d'une pièce jointe PDF d'une demande, en Mo."),
    _s("QUEUE_PAGE_SIZE", 50, int, "Demandes par page dans la file de l'instructeur."),
    _s("DRAFT_REMINDER_DAYS", 15, int, "Jours sans modification avant la relance d'un brouillon."),
    _s(
        "CHANGES_WARNING_MONTHS",
        6,
        int,
        "Mois en « modifications demandées » avant l'avertissement d'archivage.",
    ),
    _s("CHANGES_ARCHIVE_DAYS", 15, int, "Jours entre cet avertissement et l'archivage."),
    # --- audit, consommation, rétention ---
    _s(
        "AUDIT_CHECKPOINT_MINUTES",
        15,
        int,
        "Intervalle des points de contrôle signés de la chaîne d'audit, en minutes.",
    ),
    _s(
        "USAGE_SEAL_DELAY_HOURS",
        2,
        int,
        "Retard toléré des rapports de consommation : une journée est scellée ce délai après "
        "sa fin (les événements plus tardifs sont refusés).",
    ),
    _s(
        "USAGE_MAX_BODY_MB",
        8,
        int,
        "Taille maximale d'un lot `POST /api/v1/usage`, en Mo (au-delà : 413).",
    ),
    _s(
        "RETENTION_USAGE_EVENTS_MONTHS",
        12,
        int,
        "Conservation des événements de consommation, en mois.",
    ),
    _s(
        "RETENTION_USAGE_DAILY_MONTHS",
        60,
        int,
        "Conservation des compteurs quotidiens de consommation, en mois.",
    ),
    _s("RETENTION_AUDIT_MONTHS", 60, int, "Conservation des événements d'audit, en mois."),
    # --- cycle de vie (lifecycle) ---
    _s(
        "LIFECYCLE_RENEWAL_GRACE_DAYS",
        30,
        int,
        "Délai de grâce de l'ancien jeton après un renouvellement, en jours (90 au plus).",
    ),
    _s(
        "RENEWAL_WINDOW_DAYS",
        90,
        int,
        "Le renouvellement est ouvert ce nombre de jours avant et après l'expiration.",
    ),
    _s(
        "LIFECYCLE_CLOSE_AFTER_DAYS",
        90,
        int,
        "Jours après l'expiration d'un jeton non renouvelé avant la clôture de l'habilitation.",
    ),
    _s(
        "LIFECYCLE_DIGEST_HOUR",
        7,
        int,
        "Heure (Paris) du récapitulatif quotidien aux instructeurs.",
    ),
    _s(
        "LIFECYCLE_CHUNK",
        500,
        int,
        "Jetons traités par transaction lors d'un passage du cycle de vie.",
    ),
    # --- exploitation (operations) ---
    _s(
        "LOG_FORMAT",
        "text",
        str,
        "Format des journaux : `text` ou `json` (chaque ligne en JSON, plus une ligne par "
        "requête : identifiant, méthode, route, statut, durée).",
    ),
    _s(
        "METRICS_TOKEN",
        "",
        str,
        "Jeton que `/metrics` exige (`Authorization: Bearer …`) ; vide : `/metrics` ne répond "
        "qu'aux appels locaux (127.0.0.1, ::1).",
    ),
    _s(
        "READY_SCHEDULER_MAX_AGE_SECONDS",
        180,
        int,
        "`/readyz` échoue quand le dernier signe de vie du planificateur est plus ancien, en "
        "secondes (il en donne toutes les 30 secondes).",
    ),
    _s(
        "READY_CHECKPOINT_PERIODS",
        3,
        int,
        "`/readyz` échoue quand des événements d'audit attendent un point de contrôle signé "
        "depuis plus de ce nombre d'intervalles `AUDIT_CHECKPOINT_MINUTES`.",
    ),
]

SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}


def _instance_secret(name: str, make: Callable[[], str]) -> str:
    """A development secret generated once into ``instance/`` with mode 0600."""
    INSTANCE.mkdir(parents=True, exist_ok=True)
    path = INSTANCE / name
    if path.exists():
        return path.read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        value = make()
        handle.write(value + "\n")
    return value


def new_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def decode_master_key(value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ConfigError("DATAPASS_MASTER_KEY doit être encodée en base64.") from exc
    if len(raw) != 32:
        raise ConfigError("DATAPASS_MASTER_KEY doit faire 32 octets (44 caractères en base64).")
    return raw


def load(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> dict:
    """Build the configuration: defaults, then environment, then ``overrides`` (tests)."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        value = setting.default
        raw = raw_value(setting, environ)
        if raw is not None:
            try:
                value = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.env} invalide : {exc}") from exc
        config[setting.key] = value
    config["DATABASE_URL"] = normalise_database_url(str(config["DATABASE_URL"]))
    config.update(overrides)
    if not config.get("BASE_URL") and config.get("ENV") != "production":
        config["BASE_URL"] = served_url(environ)
    validate(config)
    return config


# Names also read, without the prefix, when the ``DATAPASS_`` one is not set (conventions of
# Flask and of hosting platforms).
ALIASES = {"SECRET_KEY": "SECRET_KEY", "DATABASE_URL": "DATABASE_URL"}


def raw_value(setting: Setting, environ) -> str | None:
    """The text of one setting: ``DATAPASS_X``, or the content of the file named by
    ``DATAPASS_X_FILE``, or its alias; ``None`` when none is set."""
    file_env = f"{setting.env}_FILE"
    raw = environ.get(setting.env)
    path = environ.get(file_env)
    if raw is not None and path is not None:
        raise ConfigError(
            f"{setting.env} et {file_env} sont tous deux définis : gardez l'un ou l'autre."
        )
    if path is not None:
        return _read_value_file(file_env, path)
    if raw is None and setting.key in ALIASES:
        raw = environ.get(ALIASES[setting.key])
    return raw


def _read_value_file(file_env: str, path: str) -> str:
    if not path.strip():
        raise ConfigError(
            f"{file_env} est vide : il doit nommer le fichier qui contient la valeur."
        )
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "illisible"
        raise ConfigError(f"{file_env} : impossible de lire {path} ({reason}).") from exc


def normalise_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (hosting platforms, ``DATABASE_URL``) name no
    driver, and SQLAlchemy would pick psycopg2, which Datapass does not install: psycopg 3."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in {"postgres", "postgresql"}:
        return f"postgresql+psycopg://{rest}"
    return url


def served_url(environ) -> str:
    """Where the development server answers (``python app.py`` reads the same ``HOST`` and
    ``PORT``): links in mails, the tokens' ``iss`` and the export recipe follow the port
    actually served, e.g. ``PORT=8080 make run``."""
    host = (environ.get("HOST") or "").strip() or "127.0.0.1"
    if host in {"0.0.0.0", "::", "[::]"}:  # noqa: S104 (listening everywhere: loopback answers)
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = (environ.get("PORT") or "").strip() or "5000"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"PORT invalide : un numéro de port (1 à 65535) est attendu ({port!r}).")
    return f"http://{host}:{int(port)}"


def validate(config: dict[str, Any]) -> None:
    """Refuse, with one line for the operator, a configuration that must not run."""
    env = config["ENV"]
    if env not in {"development", "production", "testing"}:
        raise ConfigError(f"DATAPASS_ENV doit valoir development, production ou testing ({env!r}).")
    production = env == "production"
    for key, generate in (
        ("SECRET_KEY", lambda: secrets.token_urlsafe(48)),
        ("MASTER_KEY", new_master_key),
    ):
        value = config.get(key)
        if value is None or str(value).strip().lower() in KNOWN_DEFAULTS:
            if production:
                raise ConfigError(
                    f"DATAPASS_{key} est absente ou vaut une valeur connue : "
                    "Datapass refuse de démarrer en production sans un secret propre."
                )
            config[key] = _instance_secret(key.lower(), generate)
        if production and key == "SECRET_KEY" and len(str(config[key])) < 32:
            raise ConfigError("DATAPASS_SECRET_KEY doit compter au moins 32 caractères.")
    config["MASTER_KEY_BYTES"] = decode_master_key(config["MASTER_KEY"])
    base_url = str(config.get("BASE_URL") or "").strip()
    if not base_url:
        raise ConfigError(
            "DATAPASS_BASE_URL est obligatoire en production (l'URL publique de Datapass, "
            "ex. https://datapass.gouv.fr) : elle fait les liens des courriels et l'iss des jetons."
        )
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("DATAPASS_BASE_URL doit commencer par http:// ou https://.")
    if config["MAIL_BACKEND"] not in {"file", "smtp"}:
        raise ConfigError("DATAPASS_MAIL_BACKEND doit valoir file ou smtp.")
    for key in ("SESSION_HOURS", "LOGIN_MAX_FAILURES", "LOGIN_WINDOW_MINUTES", "SMTP_PORT"):
        if int(config[key]) <= 0:
            raise ConfigError(f"DATAPASS_{key} doit être un entier positif.")
    if not 0 <= float(config["USAGE_FLUSH_SECONDS"]) <= 60:
        raise ConfigError("DATAPASS_USAGE_FLUSH_SECONDS doit être compris entre 0 et 60.")


def flask_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Flask's own keys derived from ours, so the two never disagree."""
    from datetime import timedelta

    production = config["ENV"] == "production"
    return {
        "SECRET_KEY": config["SECRET_KEY"],
        "SQLALCHEMY_DATABASE_URI": config["DATABASE_URL"],
        # A server connection may have died while idle in the pool (a PostgreSQL restart):
        # test it on checkout. A SQLite file cannot, so no ping there (a query per request).
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": not config["DATABASE_URL"].startswith("sqlite")
        },
        "TESTING": config["ENV"] == "testing",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "SESSION_COOKIE_NAME": "__Host-datapass" if production else "datapass",
        "REMEMBER_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=config["SESSION_HOURS"]),
        "WTF_CSRF_TIME_LIMIT": config["SESSION_HOURS"] * 3600,
        "WTF_CSRF_CHECK_DEFAULT": False,  # checked in datapass.access.enforce
        "MAX_CONTENT_LENGTH": 12 * 1024 * 1024,
        "PREFERRED_URL_SCHEME": "https" if production else "http",
    }
