"""Settings come from the environment, with defaults for a developer's machine."""

import os
import unittest
from unittest import mock

from graphapi.settings import Settings


class SettingsTest(unittest.TestCase):
    def test_defaults_point_at_a_local_ollama(self):
        with mock.patch.dict(os.environ, {}, clear=True):
            settings = Settings()
        self.assertEqual(settings.ollama_host, "http://127.0.0.1:11434")
        self.assertEqual(settings.chat_model, "llama3.1:8b")

    def test_the_environment_overrides_the_model(self):
        with mock.patch.dict(os.environ, {"CHAT_MODEL": "qwen3:32b"}, clear=True):
            self.assertEqual(Settings().chat_model, "qwen3:32b")


if __name__ == "__main__":
    unittest.main()
