"""Floor 3: the app's services over the SQLite store — the only code that runs SQL. Functions take
(store, user, ...), check the role themselves and return dataclasses."""
