"""/api/admin/config and the routes that change it: profile, hours, holidays, services, staff,
escalation, tools, prompts (with a preview), and the providers the environment chose."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends

from agent.admin.access import Actor, AdminAccess
from agent.admin.applier import AdminHost, ConfigApplier
from agent.prompts import build_system_prompt, opening, phrases
from agent.settings import Settings
from tools.admin.models import (
    EscalationIn,
    HolidaysIn,
    HoursIn,
    ProfileIn,
    PromptsIn,
    ServiceIn,
    StaffIn,
    ToolsIn,
)
from tools.admin.service import AdminService
from tools.admin.views import AdminViews
from tools.domain.business import describe_hours
from tools.store.business import load_business
from tools.store.db import Database


def build_config_router(
    access: AdminAccess,
    service: AdminService,
    views: AdminViews,
    applier: ConfigApplier,
    state: AdminHost,
) -> APIRouter:
    """The business configuration: read it whole, change it part by part."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(access)
    settings = state.settings
    apply = applier.apply

    @router.get("/config", summary="The whole business configuration")
    async def get_config(who: Actor = Who) -> dict[str, Any]:
        config = await views.config()
        config["providers"] = providers_view(settings)
        # Whether the notice is spoken (and may not be removed), and the default wording.
        config["prompts"]["recording"] = settings.recording
        config["prompts"]["recording_notice_default"] = phrases()["recording_notice"]
        return config

    @router.put("/profile", summary="Business name, time zone, address, phone, booking rules")
    async def put_profile(body: ProfileIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_profile(who.name, body))

    @router.put("/hours", summary="Weekly opening hours (replaces all)")
    async def put_hours(body: HoursIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.set_hours(who.name, body))

    @router.put("/holidays", summary="Closed days and periods (replaces all)")
    async def put_holidays(body: HolidaysIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.set_holidays(who.name, body))

    @router.put("/escalation", summary="Escalation numbers and warm/cold transfer")
    async def put_escalation(body: EscalationIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_escalation(who.name, body))

    @router.put("/tools", summary="Turn the agent's tools on or off")
    async def put_tools(body: ToolsIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_tools(who.name, body))

    @router.put("/prompts", summary="Greeting and persona")
    async def put_prompts(body: PromptsIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_prompts(who.name, body))

    @router.post("/prompts/preview", summary="How a greeting and persona would read on a call")
    async def preview_prompts(body: PromptsIn, who: Actor = Who) -> dict[str, Any]:
        return await prompt_preview(state.db, state.brain is not None, body, settings.recording)

    @router.get("/providers", summary="Which providers the environment configured (read-only)")
    async def get_providers(who: Actor = Who) -> dict[str, Any]:
        return providers_view(settings)

    router.include_router(build_catalog_router(access, service, applier))
    return router


def build_catalog_router(
    access: AdminAccess, service: AdminService, applier: ConfigApplier
) -> APIRouter:
    """What the business offers and who: services and staff."""
    router = APIRouter()
    Who = Depends(access)

    @router.post("/services", status_code=201, summary="Add a service")
    async def add_service(body: ServiceIn, who: Actor = Who) -> dict[str, Any]:
        saved = await service.save_service(who.name, body)
        await applier.changed()
        return saved

    @router.put("/services/{service_id}", summary="Change a service")
    async def put_service(service_id: int, body: ServiceIn, who: Actor = Who) -> dict[str, Any]:
        saved = await service.save_service(who.name, body, service_id)
        await applier.changed()
        return saved

    @router.delete("/services/{service_id}", summary="Stop offering a service")
    async def delete_service(service_id: int, who: Actor = Who) -> dict[str, Any]:
        removed = await service.remove_service(who.name, service_id)
        await applier.changed()
        return removed

    @router.post("/staff", status_code=201, summary="Add a staff member")
    async def add_staff(body: StaffIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_staff(who.name, body)

    @router.put("/staff/{staff_id}", summary="Change a staff member and their services")
    async def put_staff(staff_id: int, body: StaffIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_staff(who.name, body, staff_id)

    @router.delete("/staff/{staff_id}", summary="Remove a staff member")
    async def delete_staff(staff_id: int, who: Actor = Who) -> dict[str, Any]:
        return await service.remove_staff(who.name, staff_id)

    return router


def providers_view(settings: Settings) -> dict[str, Any]:
    """What the environment configured (read-only; never a secret)."""
    names = settings.provider_names()
    return {
        "stt": names["stt"],
        "llm": names["llm"] + (f" ({settings.openai_model})" if settings.uses_remote_llm else ""),
        "tts": names["tts"],
        "telephony": "twilio" if settings.twilio_auth_token else "not configured",
        "texting": f"from {settings.sms_from}" if settings.sends_texts else "not configured",
        "public_url": settings.public_url or "(derived from each request)",
        "max_concurrent_calls": settings.call_limit,
        "note": "Providers are chosen by environment variables; see README, Configuration.",
    }


async def prompt_preview(
    db: Database, local_llm: bool, prompts: PromptsIn, recording: bool = True
) -> dict[str, Any]:
    """The greeting as callers hear it (with the recording notice while calls are recorded)
    and the system prompt as the LLM reads it."""
    stored = await load_business(db)
    business = replace(
        stored,
        greeting=prompts.greeting,
        persona=prompts.persona,
        recording_notice=stored.recording_notice
        if prompts.recording_notice is None
        else prompts.recording_notice,
    )
    spoken = opening(business, None, recording=recording)
    system = build_system_prompt(business, None, True)
    return {
        "greeting": spoken,
        "system_prompt": system,
        "hours": describe_hours(business),
        "local_llm": local_llm,
    }
