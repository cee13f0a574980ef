"""Background summariser: every few seconds, summarise new documents dropped into the inbox."""

import logging
import time
from pathlib import Path

from langchain_ollama import ChatOllama

from .config import settings

log = logging.getLogger("worker")
PROMPT = "Summarise the following document in five sentences for the knowledge graph's node description.\n\n{text}"


def summarise_pending(llm: ChatOllama, inbox: Path) -> int:
    done = 0
    for doc in sorted(inbox.glob("*.txt")):
        target = doc.with_suffix(".summary")
        if target.exists():
            continue
        answer = llm.invoke(PROMPT.format(text=doc.read_text(encoding="utf-8")))
        target.write_text(answer.content, encoding="utf-8")
        done += 1
    return done


def main() -> None:
    logging.basicConfig(level=settings.log_level.upper())
    llm = ChatOllama(base_url=settings.ollama_base_url, model=settings.ollama_model, temperature=0.0)
    inbox = Path(settings.inbox_dir)
    inbox.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            count = summarise_pending(llm, inbox)
            if count:
                log.info("summarised %d document(s)", count)
        except Exception:  # Ollama restarting, a bad file: keep the loop alive
            log.exception("summary pass failed")
        time.sleep(settings.summary_interval_s)


if __name__ == "__main__":
    main()
