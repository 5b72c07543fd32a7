"""SQLModel tables: the nouns of the console. Importing this package registers every table."""

from models.account import Account, ConnectionStatus
from models.audit import AuditEvent
from models.user import Role, User

__all__ = ["Account", "AuditEvent", "ConnectionStatus", "Role", "User"]
