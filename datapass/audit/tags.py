"""Every audit tag, as one enumeration: ``domain:subject:action``.

The model is PyPI's warehouse ``EventTag``: one class per domain, one member per act.
Members are ``StrEnum``s, so they are stored and compared as the strings they were.
"""

from __future__ import annotations

from enum import StrEnum


class EventTag:
    """The acts the audit log records, by domain."""

    class Accounts(StrEnum):
        AdminCreatedByOperator = "accounts:user:admin_created_by_operator"
        MembershipAdded = "accounts:membership:added"
        MfaDisabled = "accounts:mfa:disabled"
        MfaEnabled = "accounts:mfa:enabled"
        MfaRecoveryRegenerated = "accounts:mfa:recovery_regenerated"
        MfaRecoveryUsed = "accounts:mfa:recovery_used"
        OrganisationCreated = "accounts:organisation:created"
        OrganisationSwitched = "accounts:organisation:switched"
        PasswordChanged = "accounts:password:changed"
        PasswordReset = "accounts:password:reset"
        PasswordResetRequested = "accounts:password:reset_requested"
        RoleGranted = "accounts:role:granted"
        RoleWithdrawn = "accounts:role:withdrawn"
        UserCreated = "accounts:user:created"
        UserDeactivated = "accounts:user:deactivated"
        UserInvitationAccepted = "accounts:user:invitation_accepted"
        UserInvitationResent = "accounts:user:invitation_resent"
        UserInvited = "accounts:user:invited"
        UserLogin = "accounts:user:login"
        UserLoginFailed = "accounts:user:login_failed"
        UserLoginThrottled = "accounts:user:login_throttled"
        UserLogout = "accounts:user:logout"
        UserReactivated = "accounts:user:reactivated"
        UserReauthenticated = "accounts:user:reauthenticated"

    class Audit(StrEnum):
        ConsumptionSealed = "audit:consumption:sealed"
        ExportCreated = "audit:export:created"
        ExportDownloaded = "audit:export:downloaded"
        RetentionPurged = "audit:retention:purged"

    class Authorizations(StrEnum):
        DocumentDeleted = "authorizations:document:deleted"
        HabilitationCreated = "authorizations:habilitation:created"
        HabilitationObsoleted = "authorizations:habilitation:obsoleted"
        HabilitationRevoked = "authorizations:habilitation:revoked"
        HabilitationTransferred = "authorizations:habilitation:transferred"
        RequestApprove = "authorizations:request:approve"
        RequestArchive = "authorizations:request:archive"
        RequestArchiveWarned = "authorizations:request:archive_warned"
        RequestCancelReopening = "authorizations:request:cancel_reopening"
        RequestCreated = "authorizations:request:created"
        RequestDraftReminded = "authorizations:request:draft_reminded"
        RequestMessagePosted = "authorizations:request:message_posted"
        RequestRefuse = "authorizations:request:refuse"
        RequestReopen = "authorizations:request:reopen"
        RequestRequestChanges = "authorizations:request:request_changes"
        RequestRevoke = "authorizations:request:revoke"
        RequestSubmit = "authorizations:request:submit"
        RequestTransferred = "authorizations:request:transferred"
        TemplateDeleted = "authorizations:template:deleted"
        TemplateSaved = "authorizations:template:saved"

    class Catalogue(StrEnum):
        ApiCreated = "catalogue:api:created"
        ApiStatusChanged = "catalogue:api:status_changed"
        ApiUpdated = "catalogue:api:updated"
        ClientCreated = "catalogue:client:created"
        ClientRevoked = "catalogue:client:revoked"
        ProviderCreated = "catalogue:provider:created"
        ProviderUpdated = "catalogue:provider:updated"
        ScopeCreated = "catalogue:scope:created"
        ScopeDeleted = "catalogue:scope:deleted"
        ScopeUpdated = "catalogue:scope:updated"

    class Lifecycle(StrEnum):
        HabilitationClosed = "lifecycle:habilitation:closed"
        RenewalCancelled = "lifecycle:renewal:cancelled"
        RenewalCompleted = "lifecycle:renewal:completed"
        RenewalRefused = "lifecycle:renewal:refused"
        RenewalReopened = "lifecycle:renewal:reopened"
        RenewalRequested = "lifecycle:renewal:requested"

    class Notify(StrEnum):
        MailReplayed = "notify:mail:replayed"
        MailReplayedAll = "notify:mail:replayed_all"
        WebhookCreated = "notify:webhook:created"
        WebhookDisabled = "notify:webhook:disabled"
        WebhookEnabled = "notify:webhook:enabled"
        WebhookPinged = "notify:webhook:pinged"
        WebhookReplayed = "notify:webhook:replayed"
        WebhookSecretRotated = "notify:webhook:secret_rotated"
        WebhookUpdated = "notify:webhook:updated"

    class Tokens(StrEnum):
        KeyActivated = "tokens:key:activated"
        KeyCompromised = "tokens:key:compromised"
        KeyCreated = "tokens:key:created"
        KeyRetired = "tokens:key:retired"
        KeyUnpublished = "tokens:key:unpublished"
        TokenExpired = "tokens:token:expired"
        TokenIssued = "tokens:token:issued"
        TokenLeaked = "tokens:token:leaked"
        TokenReactivated = "tokens:token:reactivated"
        TokenRevealed = "tokens:token:revealed"
        TokenRevoked = "tokens:token:revoked"
        TokenRotated = "tokens:token:rotated"
        TokenSent = "tokens:token:sent"
        TokenSuspended = "tokens:token:suspended"
