"""SQLModel tables: the nouns of the console. Importing this package registers every table."""

from models.account import Account, ConnectionStatus
from models.audit import AuditEvent
from models.catalog_state import CatalogState
from models.consent import (
    ConsentChange,
    ConsentDelivery,
    ConsentIntegration,
    ConsentPollState,
    KlaviyoWebhook,
)
from models.ingest import InboxStatus, IngestRecord, IngestRoute, IngestSource
from models.klaviyo_list import KlaviyoList, ListOperation, ListOpStatus
from models.mapping import Mapping, MappingVersion
from models.monitoring import NotificationSettings, RequestSample
from models.onsite import OnsiteSnippetSet
from models.run import BatchStatus, RowError, RunSource, RunStatus, SyncBatch, SyncRun
from models.schedule import (
    CursorKind,
    FeedFormat,
    FeedRecordSeen,
    FeedSource,
    Schedule,
    ScheduleTick,
    TickOutcome,
)
from models.session import UserSession
from models.upload import Upload, UploadStatus
from models.user import Role, User

__all__ = [
    "Account",
    "AuditEvent",
    "BatchStatus",
    "CatalogState",
    "ConnectionStatus",
    "ConsentChange",
    "ConsentDelivery",
    "ConsentIntegration",
    "ConsentPollState",
    "CursorKind",
    "FeedFormat",
    "FeedRecordSeen",
    "FeedSource",
    "InboxStatus",
    "IngestRecord",
    "IngestRoute",
    "IngestSource",
    "KlaviyoList",
    "KlaviyoWebhook",
    "ListOpStatus",
    "ListOperation",
    "Mapping",
    "MappingVersion",
    "NotificationSettings",
    "OnsiteSnippetSet",
    "RequestSample",
    "Role",
    "RowError",
    "RunSource",
    "RunStatus",
    "Schedule",
    "ScheduleTick",
    "SyncBatch",
    "SyncRun",
    "TickOutcome",
    "Upload",
    "UploadStatus",
    "User",
    "UserSession",
]
