"""Success messages that survive `st.rerun()`: a message shown right before a rerun is
wiped by it, so the action keeps it in the session and the next run shows it once.

Not a page (the leading underscore); used by the pages whose actions rerun the app."""

from __future__ import annotations

import streamlit as st

_PREFIX = "flash:"


def flash(where: str, message: str) -> None:
    """Keep `message` for the next run of the place `where` (a page's own name)."""
    st.session_state[_PREFIX + where] = message


def show_flash(where: str) -> None:
    """Show (once) the message kept for `where`, if any."""
    message = st.session_state.pop(_PREFIX + where, None)
    if message:
        st.success(message, icon=":material/check_circle:")
