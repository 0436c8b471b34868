"""Events and jobs."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, href, ref, timestamp


class EventViews(ViewsCore):
    def event(self, event: dict) -> types.Event:
        return build(
            types.Event,
            id=event["id"],
            href=href("events", event["id"]),
            time=timestamp(event["time"]),
            code=event["code"],
            severity=build(types.LogSeverity, event["severity"]),
            description=event["description"],
            origin=event.get("origin", "oVirt"),
            custom_id=event.get("custom_id", -1),
            vm=ref(types.Vm, "vms", event.get("vm_id")),
        )

    def job(self, job: dict) -> types.Job:
        return build(
            types.Job,
            id=job["id"],
            href=href("jobs", job["id"]),
            description=job["description"],
            status=build(types.JobStatus, job["status"]),
            start_time=timestamp(job["start_time"]),
            end_time=timestamp(job["end_time"]),
            auto_cleared=True,
            external=False,
        )

    def step(self, job: dict, step: dict) -> types.Step:
        base = f"jobs/{job['id']}/steps"
        return build(
            types.Step,
            id=step["id"],
            href=href(base, step["id"]),
            description=step["description"],
            type=build(types.StepEnum, step["type"]),
            number=step["number"],
            status=build(types.StepStatus, step["status"]),
            start_time=timestamp(step["start_time"]),
            end_time=timestamp(step["end_time"]),
            progress=step["progress"],
            external=False,
            job=ref(types.Job, "jobs", job["id"]),
            parent_step=ref(types.Step, base, step["parent_id"]) if step.get("parent_id") else None,
        )
