"""Live insights: what a pipeline's terminal records say, per pipeline, tenant and window.

A faust-streaming application (:mod:`streams.insights.app`) folds every terminal record of every pipeline it
finds on the cluster into windowed tables kept in Kafka changelogs; :mod:`streams.insights.ends` reads one
record into a summary (any pipeline's: what a pipeline adds is declared in its ``extras["insights"]``),
:mod:`streams.insights.windows` folds, merges and reports them, :mod:`streams.insights.alerts` compares a
window with its trailing baseline.
"""
