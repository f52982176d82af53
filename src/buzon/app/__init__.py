"""The composition root: the ``buzon`` command, and the wiring of every part.

Only this package knows all the others. :mod:`~buzon.app.main` chooses the
process model; :mod:`~buzon.app.server` wires one process (SMTP, spool intake,
delivery, transforms, monitor, metrics) and runs its lifecycle;
:mod:`~buzon.app.supervisor` and :mod:`~buzon.app.worker` run several such
processes; :mod:`~buzon.app.wiring` holds the builders both models share.
No module outside this package imports it (``docs/architecture.md``).
"""
