"""The store layer: the only code that touches the database.

Repository functions take a ``Session`` and never commit; the caller owns the unit of work
(``with store.session() as s:`` commits on success, rolls back on error).
"""
