"""Events (the engine's audit log, and external events clients add) and jobs."""

from ovirtsim.engine.core import EngineCore, new_id, now_iso
from ovirtsim.errors import bad_request


class Events(EngineCore):
    def event(
        self, description: str, *, severity: str = "normal", code: int = 0, vm_id: str | None = None, **external
    ) -> dict:
        with self.store.lock:
            events = self.store["events"]
            next_id = str(max((int(k) for k in events), default=0) + 1)
            events[next_id] = {
                "id": next_id,
                "time": now_iso(),
                "description": description,
                "severity": severity,
                "code": code,
                "vm_id": vm_id,
                **external,
            }
            for old in sorted(events, key=int)[:-500]:
                del events[old]
            return events[next_id]

    def add_external_event(self, spec) -> dict:
        """An event a client adds (a backup tool saying what it does), with its own origin and id."""
        if not spec.description:
            raise bad_request("Cannot add Event. The description is required (description).")
        if not spec.origin or spec.custom_id is None:
            raise bad_request("Cannot add Event. External events need origin and custom_id.")
        if spec.origin == "oVirt":
            raise bad_request("Cannot add Event. The origin oVirt is reserved for the engine's own events.")
        severity = spec.severity.value if spec.severity else "normal"
        vm_id = None
        if spec.vm is not None and spec.vm.id:
            with self.store.lock:
                vm_id = self.get("vms", spec.vm.id)["id"]
        codes = {"normal": 12000, "warning": 12001, "error": 12002, "alert": 12003}
        return self.event(
            spec.description,
            severity=severity,
            code=codes.get(severity, 12000),
            vm_id=vm_id,
            origin=spec.origin,
            custom_id=spec.custom_id,
        )

    # ----- jobs ------------------------------------------------------------------------

    def _job(self, description: str) -> str:
        job_id = new_id()
        self.store["jobs"][job_id] = {
            "id": job_id,
            "description": description,
            "status": "started",
            "start_time": now_iso(),
            "end_time": None,
        }
        return job_id

    def _end_job(self, job_id: str, ok: bool) -> None:
        job = self.store["jobs"].get(job_id)
        if job:
            job["status"] = "finished" if ok else "failed"
            job["end_time"] = now_iso()
        jobs = self.store["jobs"]
        for old in sorted(jobs, key=lambda k: jobs[k]["start_time"])[:-200]:
            del jobs[old]

    # ----- a job's steps (jobs/{id}/steps) -----------------------------------------------

    def _step(self, job: dict, kind: str, description: str, parent: str | None = None) -> str:
        step = {
            "id": new_id(),
            "type": kind,
            "description": description,
            "status": "started",
            "number": len(job["steps"]),
            "parent_id": parent,
            "start_time": now_iso(),
            "end_time": None,
            "progress": None,
        }
        job["steps"].append(step)
        return step["id"]

    def _end_step(self, job: dict, step_id: str, ok: bool = True) -> None:
        for step in job["steps"]:
            if step["id"] == step_id:
                step["status"], step["end_time"] = ("finished" if ok else "failed"), now_iso()

    def _set_step_progress(self, job_id: str, step_id: str, progress: int) -> None:
        with self.store.lock:
            for step in self.store["jobs"].get(job_id, {}).get("steps", []):
                if step["id"] == step_id:
                    step["progress"] = progress

    def _sub_step(self, job_id: str, parent: str, description: str) -> str:
        with self.store.lock:
            job = self.store["jobs"][job_id]
            return self._step(job, "unknown", description, parent)

    def _close_step(self, job_id: str, step_id: str, ok: bool = True) -> None:
        with self.store.lock:
            self._end_step(self.store["jobs"][job_id], step_id, ok)
