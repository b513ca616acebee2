"""Tests of one custom component (test_component, test_job, test_run)."""
