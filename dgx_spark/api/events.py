"""API routes: events (to be filled in)."""

from fastapi import APIRouter

router = APIRouter()
