"""/api/admin/kb: the knowledge-base articles the agent searches."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from agent.admin.access import Actor, AdminAccess
from tools.admin.models import ArticleIn
from tools.admin.service import AdminService
from tools.admin.views import AdminViews


def build_kb_router(access: AdminAccess, service: AdminService, views: AdminViews) -> APIRouter:
    """List (and search like the agent does), read, add, change and delete articles."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(access)

    @router.get("/kb", summary="Knowledge-base articles; q= searches like the agent does")
    async def list_articles(q: str = "", who: Actor = Who) -> dict[str, Any]:
        return {"articles": await views.articles(q)}

    @router.post("/kb", status_code=201, summary="Add an article")
    async def add_article(body: ArticleIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_article(who.name, body)

    @router.get("/kb/{article_id}", summary="One article")
    async def get_article(article_id: int, who: Actor = Who) -> dict[str, Any]:
        return await views.article(article_id)

    @router.put("/kb/{article_id}", summary="Change an article")
    async def put_article(article_id: int, body: ArticleIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_article(who.name, body, article_id)

    @router.delete("/kb/{article_id}", summary="Delete an article")
    async def delete_article(article_id: int, who: Actor = Who) -> dict[str, Any]:
        await service.delete_article(who.name, article_id)
        return {"deleted": article_id}

    return router
