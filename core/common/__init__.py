"""Floor 0: what every floor uses — errors, atomic files, the settings (the only reader of the environment), images, text."""
