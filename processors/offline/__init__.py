"""The offline model provider: deterministic classifiers, a grounded writer and a judge.

It ships with triage and is served as a local OpenAI-compatible server
(:mod:`processors.offline.server`), so the pipeline talks to it through the real ``openai`` client
whenever no remote endpoint is configured. The functions below are also usable directly.
"""
from processors.offline.classify import LABELS, TASKS, classify
from processors.offline.judge import CHECKS, judge
from processors.offline.write import write_reply

__all__ = ["CHECKS", "LABELS", "TASKS", "classify", "judge", "write_reply"]
