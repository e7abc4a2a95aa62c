"""The agent's tools, listed explicitly, in the order the model sees them; and the registry of
the ones a call may use.

Each tool's filler ("one moment") and timeout are set here, beside its name.
"""

from __future__ import annotations

from collections.abc import Collection

from tools.actions.business_info import get_business_info
from tools.actions.calendar import (
    book_appointment,
    cancel_appointment,
    check_availability,
    confirm_appointment,
    reschedule_appointment,
)
from tools.actions.crm import add_note, find_customer, list_my_appointments, save_customer
from tools.actions.handoff import end_call, take_message, transfer_to_human
from tools.actions.knowledge import search_knowledge_base
from tools.actions.outreach import stop_calling_me
from tools.actions.verification import send_verification_code, verify_code
from tools.registry import ToolRegistry, ToolSpec

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec.of(get_business_info, filler=False, timeout_secs=3.0),
    ToolSpec.of(search_knowledge_base, timeout_secs=3.0),
    ToolSpec.of(find_customer, filler=False, timeout_secs=3.0),
    ToolSpec.of(save_customer, filler=False, timeout_secs=3.0),
    ToolSpec.of(add_note, filler=False, timeout_secs=3.0),
    ToolSpec.of(send_verification_code, timeout_secs=12.0),
    ToolSpec.of(verify_code, filler=False, timeout_secs=3.0),
    ToolSpec.of(list_my_appointments, timeout_secs=3.0),
    ToolSpec.of(check_availability),
    ToolSpec.of(book_appointment),
    ToolSpec.of(cancel_appointment),
    ToolSpec.of(reschedule_appointment),
    ToolSpec.of(confirm_appointment, filler=False),
    ToolSpec.of(stop_calling_me, filler=False, timeout_secs=3.0),
    ToolSpec.of(transfer_to_human, filler=False, timeout_secs=10.0),
    ToolSpec.of(take_message, filler=False, timeout_secs=5.0),
    ToolSpec.of(end_call, filler=False, timeout_secs=3.0),
)

TOOL_NAMES: tuple[str, ...] = tuple(spec.name for spec in TOOLS)
#: The tools the caller hears the filler phrase for while they run.
FILLER_TOOLS: frozenset[str] = frozenset(spec.name for spec in TOOLS if spec.filler)


def tool_registry(enabled: Collection[str] | None = None) -> ToolRegistry:
    """A registry of the tools in ``enabled`` (all when None); ValueError names unknown ones."""
    names = TOOL_NAMES if enabled is None else enabled
    unknown = [name for name in names if name not in TOOL_NAMES]
    if unknown:
        raise ValueError(f"unknown tools: {', '.join(unknown)}")
    return ToolRegistry(spec for spec in TOOLS if spec.name in names)
