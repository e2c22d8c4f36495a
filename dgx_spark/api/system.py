"""API routes: system (to be filled in)."""

from fastapi import APIRouter

router = APIRouter()
