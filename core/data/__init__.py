"""Floor 1: catalogues in — CSV reading, photos (local, zip, URL), category trees, column guesses."""
