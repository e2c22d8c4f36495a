"""API routes: audit (to be filled in)."""

from fastapi import APIRouter

router = APIRouter()
