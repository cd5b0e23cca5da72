"""The `mimi` and `moshi` command lines over mimi_codec and moshi_lm."""
