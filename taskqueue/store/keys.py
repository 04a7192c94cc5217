"""Every Redis key taskqueue uses, under one prefix. No other module formats a key.

{p}:queue:<name>      list   ready messages; producers LPUSH, workers take from the right (FIFO)
{p}:delayed           zset   "<queue>|<message>" scored by due time (ms): delays and retries
{p}:inflight:<worker> hash   token -> "<queue>|<message>" taken by that worker and not yet settled
{p}:claim:<worker>:<queue>  list  messages that worker's idle watcher moved out of that queue (BLMOVE) and started
                      at once; its next exchange moves them into its in-flight hash (retire and recovery read it too)
{p}:workers           zset   worker id -> lease deadline (ms), renewed by the worker's heartbeat
{p}:worker:<worker>   hash   that worker's host, pid, slots, active tasks (expires with its lease)
{p}:dead              hash   task id -> dead-letter record (msgpack)
{p}:dead:index        zset   task id -> time of death (ms); bounds the dead store by size and age
{p}:result:<id>       string msgpack result of a finished task, kept for the task's result_ttl
{p}:failures          list   the newest failed attempts (msgpack FailureRecord), capped: retried and buried ones
{p}:stats             hash   counters of every process and runner (fields: see stats.py)
{p}:tasks             hash   task name -> msgpack policy, published by the runner for clients
{p}:queues            hash   queue name -> msgpack {priority, max_length}, published by the runner
{p}:schedules         hash   "<schedule>:last|next|fired" -> fire times (ms) of periodic schedules
{p}:runners:leases    zset   runner id -> lease deadline (ms), renewed by the runner's heartbeat (runner/presence.py)
{p}:runner:<runner>   hash   that runner's host, pid, config, started (expires with its lease)
{p}:reload            channel  a reload request (msgpack {id, runners}) for the runners it names (`taskqueue reload`)
{p}:reload:<request>  list   each named runner's verdict on that request (msgpack), read by the CLI (kept 10 min)
{p}:autoscaler        hash   runner id -> its last scaling decision (msgpack {at, direction, from, to, reason})
{p}:delayed:wake      channel  published when a delayed task becomes the earliest one
{p}:workflow:<id>     hash   one workflow's steps, their states, results and what waits for what (canvas.py)
{p}:workflows         zset   workflow id -> start time (ms): the newest 10,000, for the dashboard
{p}:limit:<task>:<kind>:<value>  a limit's state for one value of its key kwarg ("-": no key): rate:<i> zset
                      (the starts of the last window), running zset (holders "<worker>|<task id>"), waiting list
                      ("<queue>|<message>" held back by the limit, oldest on the right)
{p}:limits:waiting    zset   waiting list key -> when the timer looks at it again (ms, Redis' clock)
{p}:limits:spec       hash   waiting list key -> its limit's spec (JSON, see lua/lib/limits.lua)
{p}:cancelled         zset   task id -> when it was cancelled (ms): the newest 100,000 of the last 7 days
{p}:cancel            channel  a cancelled task id, for the workers that may hold it
{p}:progress:<id>     hash   fraction, message, at: what a running task said of its progress (kept 1 day)
{p}:unique:<task>:<h> string id of the task holding that unique key (h: digest of its call, or k:<unique_key>)
{p}:events            stream lifecycle events of tasks with events on (SPEC §13; fields: see features/events.py);
                      consumer group "webhook:<name>" per webhook (runner/webhooks.py); trimmed at max_len,
                      with webhooks at max_backlog and by the runners past what they read (trim_events.lua)
{p}:webhooks:dead     hash   "<webhook>|<stream id>" -> JSON record of an event that could not be delivered
{p}:webhooks:dead:index zset the same members -> when they were given up (ms); bounds the store
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "tq"

    def queue(self, name: str) -> str:
        return f"{self.prefix}:queue:{name}"

    @property
    def queue_prefix(self) -> str:
        """For the Lua that turns a delayed member's queue name into its list key."""
        return f"{self.prefix}:queue:"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    @property
    def delayed_wake(self) -> str:
        return f"{self.prefix}:delayed:wake"

    def inflight(self, worker_id: str) -> str:
        return f"{self.prefix}:inflight:{worker_id}"

    def claim(self, worker_id: str, queue: str) -> str:
        return f"{self.claims_of(worker_id)}{queue}"

    @property
    def claims_prefix(self) -> str:
        """The start of every claim list (for a SCAN; `claim_holder` reads a key back)."""
        return f"{self.prefix}:claim:"

    def claims_of(self, worker_id: str) -> str:
        """The start of every claim list of one worker."""
        return f"{self.claims_prefix}{worker_id}:"

    def claim_holder(self, key: str) -> tuple[str, str]:
        """(worker id, queue) of a claim list's key. Queue names hold no ':' (the schema's pattern)."""
        worker_id, _, queue = key[len(self.claims_prefix) :].rpartition(":")
        return worker_id, queue

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def fence(self, worker_id: str) -> str:
        """The number of the worker's last exchange applied (exchange.lua): not tied to its lease, which a stall
        may outlast; removed when it retires, kept a day at most."""
        return f"{self.prefix}:fence:{worker_id}"

    @property
    def runners(self) -> str:
        """The runners' leases. Older versions kept a hash `{p}:runners` whose entries never expired: not read."""
        return f"{self.prefix}:runners:leases"

    def runner(self, runner_id: str) -> str:
        return f"{self.prefix}:runner:{runner_id}"

    @property
    def reload_channel(self) -> str:
        return f"{self.prefix}:reload"

    def reload_verdicts(self, request_id: str) -> str:
        return f"{self.prefix}:reload:{request_id}"

    @property
    def autoscaler(self) -> str:
        return f"{self.prefix}:autoscaler"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}:schedules"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def dead_index(self) -> str:
        return f"{self.prefix}:dead:index"

    def workflow(self, workflow_id: str) -> str:
        return f"{self.prefix}:workflow:{workflow_id}"

    @property
    def workflows(self) -> str:
        return f"{self.prefix}:workflows"

    def limit(self, task: str, kind: str, value: str) -> str:
        return f"{self.prefix}:limit:{task}:{kind}:{value}"

    @property
    def limits_waiting(self) -> str:
        return f"{self.prefix}:limits:waiting"

    @property
    def limits_spec(self) -> str:
        return f"{self.prefix}:limits:spec"

    @property
    def cancelled(self) -> str:
        return f"{self.prefix}:cancelled"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"

    def progress(self, task_id: str) -> str:
        return f"{self.prefix}:progress:{task_id}"

    def unique(self, lock: str) -> str:
        """A unique key's lock; `lock` is what the message carries (`<task>:<digest>`)."""
        return f"{self.prefix}:unique:{lock}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def webhooks_dead(self) -> str:
        return f"{self.prefix}:webhooks:dead"

    @property
    def webhooks_dead_index(self) -> str:
        return f"{self.prefix}:webhooks:dead:index"

    @property
    def result_prefix(self) -> str:
        return f"{self.prefix}:result:"

    def result(self, task_id: str) -> str:
        return f"{self.prefix}:result:{task_id}"

    @property
    def failures(self) -> str:
        return f"{self.prefix}:failures"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def tasks(self) -> str:
        return f"{self.prefix}:tasks"

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"


def split_member(member: bytes) -> tuple[str, bytes]:
    """`b"default|<message>"` → ("default", b"<message>"); queue names never contain '|'."""
    queue, _, message = member.partition(b"|")
    return queue.decode(), message


def join_member(queue: str, message: bytes) -> bytes:
    return queue.encode() + b"|" + message
