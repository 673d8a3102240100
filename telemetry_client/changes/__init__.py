"""The changes panel: review, accept, reject and revert the file edits an agent made.

Every ``file_operation`` recorded through a client (``file_operation``, ``write_file``,
``track_file``) also goes into a change journal on its spool (:mod:`.journal`, written by
:mod:`.hook`), shared by every process on that spool. The panel's logic is :mod:`.panel`
(decisions; reverts in :mod:`.revert`); its HTTP face is
``telemetry_client.integrations.fastapi.changes_router`` (:mod:`.router`, needs the
``fastapi`` extra, so it is not imported here). Design: ``docs/changes.md``.
"""

from telemetry_client.changes.journal import ChangeJournal, OpRecord, changes_dir

__all__ = ["ChangeJournal", "OpRecord", "changes_dir"]
