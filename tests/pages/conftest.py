"""Every page test drives the app in this process (AppTest): clear Streamlit's caches per test."""

import pytest


@pytest.fixture(autouse=True)
def _fresh_streamlit(fresh_streamlit_process):
    yield
