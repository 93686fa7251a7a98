"""Refusals the store's services raise: what was asked is wrong, not the database."""


class StoreError(Exception):
    """A store operation refused because of what was asked, not because of the database."""


class NotFound(StoreError):
    pass
