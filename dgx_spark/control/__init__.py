"""Control actions (launch, stop, restart, start again, remove, progress, nodes): ``service.ControlService``.

Plain Python: no Reflex, no FastAPI. The REST routes and the Reflex handlers both call it.
"""
