-- customer_unify 0.2.0 -> 0.3.0 (ALTER EXTENSION customer_unify UPDATE). Tested by
-- tests/upgrade/run.sh, which updates a used 0.1.0 installation through 0.2.0 to 0.3.0 and
-- compares the result with a fresh 0.3.0 install (tests/upgrade/catalog.sql), then runs the
-- whole suite on it.
--
-- What changes: issue 26's touchpoints and activation (see the sections below, one per part).
\echo Use "ALTER EXTENSION customer_unify UPDATE TO '0.3.0'" to load this file. \quit
