"""The tamper corpus: honest runs built in-process (:mod:`tamper.honest`) and the attacks on them
(:mod:`tamper.attacks`). Each attack is named after what it does; the tests assert which check
catches it."""
