"""The app's pages: one thin file per page (navigation is declared in streamlit_app.py)."""
