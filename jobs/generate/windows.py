"""Windows Security, Sysmon and PowerShell events as collectors ship them.

One collector per site (`raw/windows/<date>/wecNN.jsonl`): three sites forward with NXLog
(flat JSON, the OTRF Security-Datasets shape), the fourth (`wec04`) with Winlogbeat (ECS
JSON: `winlog.*`), so both shapes arrive every day. Normal behaviour: people unlock or log on
to their own workstation, start everyday programs (4688 + Sysmon 1, common parent -> child
pairs), map their department's file shares (4624 type 3 + 5140) and talk to their site's
domain controller; admins get 4672 and RDP to their site's servers; service accounts log on
over the network to the servers their jobs use. Around each program start comes what a
real endpoint logs most of: its image loads (Sysmon 7), a security agent or the system
opening the new process (Sysmon 10), registry writes (Sysmon 12/13), files it creates
(Sysmon 11) and, for PowerShell, its script blocks (4104).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from jobs.generate.activity import DayContext, expand_seeds, rate_vector
from jobs.generate.clock import US_PER_SECOND, iso_utc_ms, local_naive, utc_offset_s
from jobs.generate.feeds import windows_file
from jobs.generate.organisation import DOMAIN, NETBIOS, SITES, Account, Asset, Organisation
from jobs.generate.seeding import stable_int
from jobs.generate.stream import BENIGN, SCENARIO, Entry

__all__ = ["ADMIN_TOOLS", "PRIVILEGES", "WindowsEmitter"]

# activity seeds per working day; one seed is ~4.7 lines on average
SEEDS_PER_DAY = {"human": 7.2, "admin": 7.2, "service": 9.0}

SECURITY = (
    "Security",
    "Microsoft-Windows-Security-Auditing",
    "{54849625-5478-4994-A5BA-3E3B0328C30D}",
)
SYSMON = (
    "Microsoft-Windows-Sysmon/Operational",
    "Microsoft-Windows-Sysmon",
    "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}",
)
POWERSHELL_LOG = (
    "Microsoft-Windows-PowerShell/Operational",
    "Microsoft-Windows-PowerShell",
    "{A0C1853B-5C40-4B15-8766-3CF1C58F985A}",
)
KEYWORDS = {
    "AUDIT_SUCCESS": -9214364837600034816,
    "AUDIT_FAILURE": -9218868437227405312,
    "INFO": -9223372036854775808,
    "VERBOSE": 0,
}
# the site whose collector forwards with Winlogbeat (ECS JSON) instead of NXLog
WINLOGBEAT_SITE = 3
WINLOGBEAT_LEVEL = {"INFO": "information", "VERBOSE": "verbose", "WARNING": "warning"}
# EventID -> (Task, Category, Version)
META = {
    4624: (12544, "Logon", 2),
    4625: (12544, "Logon", 0),
    4648: (12544, "Logon", 0),
    4672: (12548, "Special Logon", 0),
    4688: (13312, "Process Creation", 2),
    5140: (12808, "File Share", 1),
    1: (1, "Process Create (rule: ProcessCreate)", 5),
    3: (3, "Network connection detected (rule: NetworkConnect)", 5),
    7: (7, "Image loaded (rule: ImageLoad)", 3),
    10: (10, "Process accessed (rule: ProcessAccess)", 3),
    11: (11, "File created (rule: FileCreate)", 2),
    12: (12, "Registry object added or deleted (rule: RegistryEvent)", 2),
    13: (13, "Registry value set (rule: RegistryEvent)", 2),
    4104: (2, "Execute a Remote Command", 1),
}
# What a program start brings along (per start: the chance, and what is picked from)
LOADED_MODULES = [
    "C:\\Windows\\System32\\ntdll.dll", "C:\\Windows\\System32\\kernel32.dll",
    "C:\\Windows\\System32\\user32.dll", "C:\\Windows\\System32\\combase.dll",
    "C:\\Windows\\System32\\crypt32.dll", "C:\\Windows\\System32\\winhttp.dll",
    "C:\\Windows\\System32\\amsi.dll", "C:\\Windows\\System32\\uxtheme.dll",
]  # fmt: skip
# (source image, granted access): who opens a process just started, and how
PROCESS_OPENERS = [
    ("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe", "0x1000"),
    ("C:\\Windows\\system32\\csrss.exe", "0x1fffff"),
    ("C:\\Windows\\system32\\svchost.exe", "0x1410"),
    ("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe", "0x1400"),
]  # fmt: skip
REGISTRY_KEYS = [
    "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\UserAssist\\{CEBFF5CD-ACE2-4F4F-9178-9926F41749EA}\\Count\\HRZR_PGYFRFFVBA",
    "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\FeatureUsage\\AppSwitched",
    "Software\\Microsoft\\Office\\16.0\\Common\\General\\LastActive",
    "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\RecentDocs",
]  # fmt: skip
SCRIPT_BLOCKS = [
    "prompt",
    "$global:?",
    "Set-StrictMode -Version 1; $_.PSMessageDetails",
    "Get-ChildItem -Path $env:USERPROFILE\\Documents",
    "Import-Module Microsoft.PowerShell.Utility",
]
# chances per program start: image load, process access, registry value, registry key, file
AROUND_START = (0.8, 0.5, 0.4, 0.1, 0.1)
PRIVILEGES = "\r\n\t\t\t".join(
    ["SeSecurityPrivilege", "SeBackupPrivilege", "SeRestorePrivilege", "SeTakeOwnershipPrivilege",
     "SeDebugPrivilege", "SeSystemEnvironmentPrivilege", "SeLoadDriverPrivilege", "SeImpersonatePrivilege",
     "SeDelegateSessionUserImpersonatePrivilege"]
)  # fmt: skip
BACKUP_PRIVILEGES = "SeBackupPrivilege\r\n\t\t\tSeRestorePrivilege"

EXPLORER = "C:\\Windows\\explorer.exe"
CHROME = "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"
EDGE = "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe"
OFFICE = "C:\\Program Files\\Microsoft Office\\root\\Office16\\"
POWERSHELL = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
CMD = "C:\\Windows\\System32\\cmd.exe"
# (parent image, child image, command line); {user} is the SAM account name
COMMON_PROCESSES = [
    (EXPLORER, CHROME, f'"{CHROME}"'),
    (EXPLORER, EDGE, f'"{EDGE}" --profile-directory=Default'),
    (EXPLORER, OFFICE + "OUTLOOK.EXE", f'"{OFFICE}OUTLOOK.EXE" '),
    (EXPLORER, OFFICE + "EXCEL.EXE", f'"{OFFICE}EXCEL.EXE" /dde'),
    (EXPLORER, OFFICE + "WINWORD.EXE", f'"{OFFICE}WINWORD.EXE" /n'),
    (EXPLORER, "C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe", '"C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe" --processStart "Teams.exe"'),
    (CHROME, CHROME, f'"{CHROME}" --type=renderer --lang=en-US --renderer-client-id=7'),
    (EXPLORER, "C:\\Windows\\System32\\notepad.exe", '"C:\\Windows\\system32\\notepad.exe"'),
]  # fmt: skip
DEPARTMENT_PROCESSES = {
    "engineering": [
        (EXPLORER, "C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe", '"C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe"'),
        ("C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe", "C:\\Program Files\\Git\\cmd\\git.exe", "git fetch --all"),
        (CMD, "C:\\Program Files\\Python311\\python.exe", "python -m pytest -q"),
        (EXPLORER, POWERSHELL, f'"{POWERSHELL}" -NoLogo'),
    ],
    "it": [
        (EXPLORER, POWERSHELL, f'"{POWERSHELL}" -NoLogo'),
        (EXPLORER, "C:\\Windows\\System32\\mmc.exe", '"C:\\Windows\\system32\\mmc.exe" "C:\\Windows\\system32\\dsa.msc"'),
        (POWERSHELL, "C:\\Windows\\System32\\ipconfig.exe", '"C:\\Windows\\system32\\ipconfig.exe" /all'),
    ],
    "finance": [(EXPLORER, OFFICE + "EXCEL.EXE", f'"{OFFICE}EXCEL.EXE" /dde')],
}  # fmt: skip
ADMIN_TOOLS = [
    (EXPLORER, "C:\\Windows\\System32\\ServerManager.exe", '"C:\\Windows\\system32\\ServerManager.exe"'),
    (EXPLORER, "C:\\Windows\\System32\\mmc.exe", '"C:\\Windows\\system32\\mmc.exe" "C:\\Windows\\system32\\services.msc"'),
    (EXPLORER, "C:\\Windows\\System32\\mmc.exe", '"C:\\Windows\\system32\\mmc.exe" "C:\\Windows\\system32\\eventvwr.msc" /s'),
    (EXPLORER, POWERSHELL, f'"{POWERSHELL}" -NoLogo'),
    (POWERSHELL, "C:\\Windows\\System32\\sc.exe", '"C:\\Windows\\system32\\sc.exe" query wuauserv'),
]  # fmt: skip
SYSTEM_TASK = (
    "C:\\Windows\\System32\\svchost.exe",
    "C:\\Windows\\System32\\taskhostw.exe",
    "taskhostw.exe Install $(Arg0)",
)
NETWORK_IMAGES = {
    CHROME,
    EDGE,
    OFFICE + "OUTLOOK.EXE",
    "C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe",
}


def _index(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an index, got {value!r}")
    return value


class WindowsEmitter:
    """One site's Windows Event Collector (NXLog im_msvistalog -> JSON lines)."""

    source = "windows"

    def __init__(self, shard: str, org: Organisation) -> None:
        self.shard = shard
        self.org = org
        self.site = int(shard[3:]) - 1
        self.file = windows_file(shard)
        self.tz = SITES[self.site].timezone
        self.collector = f"{shard}.{DOMAIN}"
        # two collector builds: one writes NTSTATUS codes lower case (as Windows does), one upper
        self.upper_status = self.site % 2 == 1
        self.winlogbeat = self.site == WINLOGBEAT_SITE
        self.domain_sid = f"S-1-5-21-{1000000000 + stable_int(('dom', org.seed)) % 999999999}-{1000000000 + stable_int(('dom2', org.seed)) % 999999999}-{100000000 + stable_int(('dom3', org.seed)) % 899999999}"
        self.records: dict[tuple[str, str], int] = {}
        self._heads: dict[tuple[int, int, str, str], str] = {}
        self._tail = json.dumps(
            {"SourceModuleName": "eventlog", "SourceModuleType": "im_msvistalog",
             "host": self.collector, "port": 60122, "tags": ["nxlog"]}
        ).replace("{", ", ", 1)  # fmt: skip

    # -- stream protocol -----------------------------------------------------------------

    def files_for_day(self, ctx: DayContext) -> list[str]:
        return [self.file]

    def header(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def footer(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]:
        org = self.org
        rates = rate_vector(org, SEEDS_PER_DAY, ctx.scale)
        for a in org.accounts:
            if a.site != self.site or (a.account_type == "service" and a.origin < 0):
                rates[a.index] = 0.0

        def expand(who: int, ts: int, r: list[float], _z: list[float]) -> list[Entry]:
            account = org.accounts[who]
            if account.account_type == "service":
                return self._service_logon(ctx, account, ts, r)
            if account.account_type == "admin" and r[0] < 0.3:
                return self._admin_session(ctx, account, ts, r)
            if r[0] < 0.45 or (account.account_type == "admin" and r[0] < 0.6):
                return self._workstation_session(ctx, account, ts, r)
            if r[0] < 0.80:
                return self._file_access(ctx, account, ts, r)
            return self._dc_logon(ctx, account, ts, r)

        yield from expand_seeds(ctx, rates, expand, randoms=10, lookback_us=60 * US_PER_SECOND)

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]:
        """Scenario specs name an event kind, a host, an account and the event's details."""
        host = self.org.assets[_index(spec["host"])]
        account = (
            self.org.accounts[_index(spec["account"])] if spec.get("account") is not None else None
        )
        kind = spec["kind"]
        ip = str(spec.get("ip", "-"))
        port = str(spec.get("port", "0"))
        if kind == "logon" and account is not None:
            lines = [self.logon(ctx, host, ts_us, account.sam, str(spec.get("logon_type", "3")), ip, port,
                                workstation=str(spec.get("workstation", "-")), package=str(spec.get("package", "NTLM")))]  # fmt: skip
        elif kind == "logon_failure":
            user = account.sam if account is not None else str(spec["user"])
            lines = [self.logon_failure(ctx, host, ts_us, user, str(spec.get("logon_type", "3")), ip, port,
                                        workstation=str(spec.get("workstation", "-")), sub_status=str(spec.get("sub_status", "0xc000006a")))]  # fmt: skip
        elif kind == "special" and account is not None:
            lines = [self.special_privileges(ctx, host, ts_us, account.sam, PRIVILEGES)]
        elif kind == "process" and account is not None:
            parent, image, cmd = (str(x) for x in spec["process"])  # type: ignore[attr-defined]
            lines = self.process(ctx, host, ts_us, account, parent, image, cmd, elevated=True)
        elif kind == "share" and account is not None:
            lines = [self.share(ctx, host, ts_us, account.sam, str(spec["share"]), ip)]
        elif kind == "explicit" and account is not None:
            lines = [self.explicit_logon(ctx, host, ts_us, account.sam, str(spec["target_server"]))]
        else:
            raise ValueError(f"unknown windows scenario spec {spec!r}")
        return [
            (ts_us + k, ctx.next_seq(), self.file, line, SCENARIO, key)
            for k, (line, key) in enumerate(lines)
        ]

    # -- behaviour -----------------------------------------------------------------------

    def _workstation_session(
        self, ctx: DayContext, account: Account, ts: int, r: list[float]
    ) -> list[Entry]:
        ws = self.org.assets[account.workstation]
        out: list[tuple[int, str, str]] = []
        if r[1] < 0.02:
            t0 = ts - int(10 + r[2] * 30) * US_PER_SECOND
            out.append(
                (
                    t0,
                    *self.logon_failure(
                        ctx, ws, t0, account.sam, "2", "127.0.0.1", "0", workstation=ws.hostname
                    ),
                )
            )
        logon_type = "7" if r[2] < 0.55 else ("2" if r[2] < 0.85 else "11")
        out.append(
            (
                ts,
                *self.logon(
                    ctx,
                    ws,
                    ts,
                    account.sam,
                    logon_type,
                    "127.0.0.1",
                    "0",
                    workstation=ws.hostname,
                    package="Negotiate",
                ),
            )
        )
        if account.privileged:
            out.append((ts, *self.special_privileges(ctx, ws, ts, account.sam, PRIVILEGES)))
        catalog = COMMON_PROCESSES + DEPARTMENT_PROCESSES.get(account.department, [])
        t = ts
        for j in range(1 + int(r[3] * 4)):
            t += int((5 + r[(4 + j) % 10] * 900) * US_PER_SECOND)
            parent, image, cmd = catalog[int(r[(5 + j) % 10] * 9973 + j * 31) % len(catalog)]
            for line, key in self.process(ctx, ws, t, account, parent, image, cmd):
                out.append((t, line, key))
            out.extend(self.around_start(ctx, ws, t, account, image))
            if image in NETWORK_IMAGES and r[(6 + j) % 10] < 0.6:
                domains = list(self.org.service_ips)
                dest = self.org.service_ips[domains[int(r[9] * 7919 + j) % len(domains)]][0]
                t3 = t + int(2 * US_PER_SECOND)
                out.append((t3, *self.network_connection(ctx, ws, t3, account, image, dest, 443)))
        if r[7] < 0.10:
            t4 = ts + int(r[8] * 1800) * US_PER_SECOND
            for line, key in self.process(ctx, ws, t4, None, *SYSTEM_TASK):
                out.append((t4, line, key))
        return [(t, ctx.next_seq(), self.file, line, BENIGN, key) for t, line, key in out]

    def _file_access(
        self, ctx: DayContext, account: Account, ts: int, r: list[float]
    ) -> list[Entry]:
        servers = self.org.usual_file_servers(account)
        if not servers or account.workstation < 0:
            return self._dc_logon(ctx, account, ts, r)
        server = servers[int(r[1] * 100) % len(servers)]
        ws = self.org.assets[account.workstation]
        port = str(49152 + int(r[2] * 16000))
        share = "\\\\*\\" + account.department.capitalize()
        t2 = ts + US_PER_SECOND
        lines = [
            (
                ts,
                *self.logon(
                    ctx,
                    server,
                    ts,
                    account.sam,
                    "3",
                    ws.ip,
                    port,
                    workstation="-",
                    package="Kerberos",
                ),
            ),
            (t2, *self.share(ctx, server, t2, account.sam, share, ws.ip)),
        ]
        return [(t, ctx.next_seq(), self.file, line, BENIGN, key) for t, line, key in lines]

    def _dc_logon(self, ctx: DayContext, account: Account, ts: int, r: list[float]) -> list[Entry]:
        dcs = self.org.servers(account.site, "dc")
        if not dcs or account.workstation < 0:
            return []
        dc = dcs[int(r[1] * 100) % len(dcs)]
        ws = self.org.assets[account.workstation]
        line, key = self.logon(
            ctx,
            dc,
            ts,
            account.sam,
            "3",
            ws.ip,
            str(49152 + int(r[2] * 16000)),
            workstation="-",
            package="Kerberos",
        )
        return [(ts, ctx.next_seq(), self.file, line, BENIGN, key)]

    def _admin_session(
        self, ctx: DayContext, account: Account, ts: int, r: list[float]
    ) -> list[Entry]:
        servers = self.org.windows_servers(account.site)
        if not servers:
            return self._workstation_session(ctx, account, ts, r)
        server = servers[int(r[1] * 9973) % len(servers)]
        ws = self.org.assets[account.workstation]
        rdp = r[2] < 0.6
        out = [
            (ts, *self.logon(ctx, server, ts, account.sam, "10" if rdp else "3", ws.ip,
                             str(49152 + int(r[3] * 16000)), workstation=ws.hostname if rdp else "-",
                             package="Negotiate" if rdp else "Kerberos")),
            (ts, *self.special_privileges(ctx, server, ts, account.sam, PRIVILEGES)),
        ]  # fmt: skip
        t = ts
        for j in range(1 + int(r[4] * 3)):
            t += int((20 + r[(5 + j) % 10] * 600) * US_PER_SECOND)
            parent, image, cmd = ADMIN_TOOLS[int(r[(6 + j) % 10] * 97) % len(ADMIN_TOOLS)]
            for line, key in self.process(
                ctx, server, t, account, parent, image, cmd, elevated=True
            ):
                out.append((t, line, key))
            out.extend(self.around_start(ctx, server, t, account, image))
        return [(t, ctx.next_seq(), self.file, line, BENIGN, key) for t, line, key in out]

    def _service_logon(
        self, ctx: DayContext, account: Account, ts: int, r: list[float]
    ) -> list[Entry]:
        origin = self.org.assets[account.origin]
        name = account.sam
        if name.startswith("svc-backup"):
            targets = self.org.servers(account.site, "file") or self.org.servers(account.site, "dc")
        elif name.startswith(("svc-sql", "svc-etl", "svc-reporting")):
            targets = [s for s in self.org.servers(account.site, "db") if s.windows]
        else:
            targets = self.org.servers(account.site, "dc")
        if not targets:
            return []
        target = targets[int(r[1] * 9973) % len(targets)]
        port = str(49152 + int(r[2] * 16000))
        out = [
            (
                ts,
                *self.logon(
                    ctx,
                    target,
                    ts,
                    name,
                    "3",
                    origin.ip,
                    port,
                    workstation=origin.hostname,
                    package="NTLM",
                ),
            )
        ]
        if account.privileged:
            out.append((ts, *self.special_privileges(ctx, target, ts, name, BACKUP_PRIVILEGES)))
        if name.startswith("svc-backup"):
            t2 = ts + US_PER_SECOND
            out.append(
                (
                    t2,
                    *self.share(
                        ctx,
                        target,
                        t2,
                        name,
                        "\\\\*\\" + (target.department or "SYSVOL").capitalize(),
                        origin.ip,
                    ),
                )
            )
        return [(t, ctx.next_seq(), self.file, line, BENIGN, key) for t, line, key in out]

    # -- format --------------------------------------------------------------------------

    def user_sid(self, sam: str) -> str:
        """Domain SID + RID; directory accounts get stable RIDs from their index."""
        index = self.__dict__.get("_sams")
        if index is None:
            index = {a.sam: a.index for a in self.org.accounts}
            self.__dict__["_sams"] = index
        rid = 1100 + index.get(sam, 50000 + stable_int(sam) % 50000)
        return f"{self.domain_sid}-{rid}"

    def _status(self, code: str) -> str:
        return code.upper().replace("0X", "0x") if self.upper_status else code.lower()

    def _event(
        self,
        ctx: DayContext,
        host: Asset,
        ts: int,
        event_id: int,
        data: dict[str, object],
        event_type: str = "AUDIT_SUCCESS",
        log: tuple[str, str, str] = SECURITY,
    ) -> tuple[str, str]:
        """One event line (NXLog flat JSON, or Winlogbeat's for the Winlogbeat collector)."""
        channel = log[0]
        key = (host.asset_id, channel)
        record = self.records.get(key)
        if record is None:
            record = 100000 + stable_int((host.asset_id, channel, self.org.seed)) % 900000
        record += 1
        self.records[key] = record
        event_key = f"{host.hostname}.{DOMAIN}|{channel}|{record}"
        if self.winlogbeat:
            return self._ecs(host, ts, event_id, data, event_type, log, record), event_key
        head_key = (host.index, event_id, event_type, channel)
        head = self._heads.get(head_key)
        if head is None:
            head = self._head(host, event_id, event_type, log)
            self._heads[head_key] = head
        offset = utc_offset_s(self.tz, ts)
        body = json.dumps(data)
        line = (
            f'{{"@timestamp": "{iso_utc_ms(ts)}", "@version": "1", '
            f'"EventTime": "{local_naive(ts, offset)}", '
            f'"EventReceivedTime": "{local_naive(ts + 2 * US_PER_SECOND, offset)}", '
            f'{head}, "RecordNumber": {record}, "ThreadID": {1000 + record * 7919 % 8000}, '
            f"{body[1:-1]}{self._tail}"
        )
        return line, event_key

    def _execution_pid(self, event_id: int, log: tuple[str, str, str]) -> int:
        if event_id in (5140, 4688):
            return 4
        return {SYSMON[0]: 3120, POWERSHELL_LOG[0]: 5468}.get(log[0], 704)

    def _head(self, host: Asset, event_id: int, event_type: str, log: tuple[str, str, str]) -> str:
        channel, provider, guid = log
        task, category, version = META[event_id]
        failure = event_type == "AUDIT_FAILURE"
        head = {
            "Hostname": f"{host.hostname}.{DOMAIN}",
            "Channel": channel,
            "SourceName": provider,
            "ProviderGuid": guid,
            "EventID": event_id,
            "Version": version,
            "Task": task,
            "Category": category,
            "Opcode": "Info",
            "OpcodeValue": 0,
            "EventType": event_type,
            "Severity": "ERROR" if failure else "INFO",
            "SeverityValue": 4 if failure else 2,
            "Keywords": KEYWORDS[event_type],
            "ExecutionProcessID": self._execution_pid(event_id, log),
        }
        return json.dumps(head)[1:-1]

    def _ecs(
        self,
        host: Asset,
        ts: int,
        event_id: int,
        data: dict[str, object],
        event_type: str,
        log: tuple[str, str, str],
        record: int,
    ) -> str:
        """Winlogbeat 8 (ECS): event data as strings under `winlog.event_data`."""
        channel, provider, guid = log
        audit = event_type.startswith("AUDIT_")
        keywords = ["Audit Failure" if event_type == "AUDIT_FAILURE" else "Audit Success"]
        winlog: dict[str, object] = {
            "channel": channel,
            "event_id": str(event_id),
            "computer_name": f"{host.hostname}.{DOMAIN}",
            "record_id": record,
            "provider_name": provider,
            "provider_guid": guid,
            "keywords": keywords if audit else [],
            "opcode": "Info",
            "task": META[event_id][1],
            "api": "wineventlog",
            "process": {"pid": self._execution_pid(event_id, log), "thread": {"id": 1000 + record * 7919 % 8000}},
            "event_data": {k: str(v) for k, v in data.items()},
        }  # fmt: skip
        event: dict[str, object] = {"code": str(event_id), "kind": "event", "provider": provider}
        if audit:
            event["outcome"] = "failure" if event_type == "AUDIT_FAILURE" else "success"
        doc = {
            "@timestamp": iso_utc_ms(ts),
            "agent": {"type": "winlogbeat", "version": "8.15.0", "name": self.shard},
            "ecs": {"version": "8.0.0"},
            "host": {"name": self.collector},
            "event": event,
            "log": {"level": WINLOGBEAT_LEVEL.get(event_type, "information")},
            "winlog": winlog,
        }
        return json.dumps(doc, separators=(",", ":"))

    def logon(
        self, ctx: DayContext, host: Asset, ts: int, user: str, logon_type: str, ip: str, port: str,
        *, workstation: str, package: str,
    ) -> tuple[str, str]:  # fmt: skip
        interactive = logon_type in ("2", "7", "10", "11")
        data: dict[str, object] = {
            "SubjectUserSid": "S-1-5-18" if interactive else "S-1-0-0",
            "SubjectUserName": f"{host.hostname}$" if interactive else "-",
            "SubjectDomainName": NETBIOS if interactive else "-",
            "SubjectLogonId": "0x3e7" if interactive else "0x0",
            "TargetUserSid": self.user_sid(user),
            "TargetUserName": user,
            "TargetDomainName": NETBIOS,
            "TargetLogonId": "0x" + ctx.ids.hex(7),
            "LogonType": logon_type,
            "LogonProcessName": "User32 "
            if interactive
            else ("Kerberos" if package == "Kerberos" else "NtLmSsp "),
            "AuthenticationPackageName": package,
            "WorkstationName": workstation,
            "LogonGuid": "{" + ctx.ids.uuid4() + "}",
            "TransmittedServices": "-",
            "LmPackageName": "NTLM V2" if package == "NTLM" else "-",
            "KeyLength": "128" if package == "NTLM" else "0",
            "ProcessId": "0x3a8" if interactive else "0x0",
            "ProcessName": "C:\\Windows\\System32\\svchost.exe" if interactive else "-",
            "IpAddress": ip,
            "IpPort": port,
            "ImpersonationLevel": "%%1833",
            "RestrictedAdminMode": "-",
            "TargetOutboundUserName": "-",
            "TargetOutboundDomainName": "-",
            "VirtualAccount": "%%1843",
            "TargetLinkedLogonId": "0x0",
            "ElevatedToken": "%%1842",
        }
        return self._event(ctx, host, ts, 4624, data)

    def logon_failure(
        self, ctx: DayContext, host: Asset, ts: int, user: str, logon_type: str, ip: str, port: str,
        *, workstation: str, sub_status: str = "0xc000006a",
    ) -> tuple[str, str]:  # fmt: skip
        interactive = logon_type in ("2", "7", "10", "11")
        data: dict[str, object] = {
            "SubjectUserSid": "S-1-5-18" if interactive else "S-1-0-0",
            "SubjectUserName": f"{host.hostname}$" if interactive else "-",
            "SubjectDomainName": NETBIOS if interactive else "-",
            "SubjectLogonId": "0x3e7" if interactive else "0x0",
            "TargetUserSid": "S-1-0-0",
            "TargetUserName": user,
            "TargetDomainName": NETBIOS,
            "Status": self._status("0xc000006d"),
            "FailureReason": "%%2313",
            "SubStatus": self._status(sub_status),
            "LogonType": logon_type,
            "LogonProcessName": "User32 " if interactive else "NtLmSsp ",
            "AuthenticationPackageName": "Negotiate" if interactive else "NTLM",
            "WorkstationName": workstation,
            "TransmittedServices": "-",
            "LmPackageName": "-",
            "KeyLength": "0",
            "ProcessId": "0x3a8" if interactive else "0x0",
            "ProcessName": "C:\\Windows\\System32\\svchost.exe" if interactive else "-",
            "IpAddress": ip,
            "IpPort": port,
        }
        return self._event(ctx, host, ts, 4625, data, event_type="AUDIT_FAILURE")

    def special_privileges(
        self, ctx: DayContext, host: Asset, ts: int, user: str, privileges: str
    ) -> tuple[str, str]:
        data: dict[str, object] = {
            "SubjectUserSid": self.user_sid(user),
            "SubjectUserName": user,
            "SubjectDomainName": NETBIOS,
            "SubjectLogonId": "0x" + ctx.ids.hex(7),
            "PrivilegeList": privileges,
        }
        return self._event(ctx, host, ts, 4672, data)

    def explicit_logon(
        self, ctx: DayContext, host: Asset, ts: int, user: str, target_server: str
    ) -> tuple[str, str]:
        data: dict[str, object] = {
            "SubjectUserSid": self.user_sid(user),
            "SubjectUserName": user,
            "SubjectDomainName": NETBIOS,
            "SubjectLogonId": "0x" + ctx.ids.hex(7),
            "LogonGuid": "{00000000-0000-0000-0000-000000000000}",
            "TargetUserName": user,
            "TargetDomainName": NETBIOS,
            "TargetLogonGuid": "{00000000-0000-0000-0000-000000000000}",
            "TargetServerName": target_server,
            "TargetInfo": target_server,
            "ProcessId": "0x4",
            "ProcessName": "",
            "IpAddress": "-",
            "IpPort": "-",
        }
        return self._event(ctx, host, ts, 4648, data)

    def share(
        self, ctx: DayContext, host: Asset, ts: int, user: str, share: str, ip: str
    ) -> tuple[str, str]:
        data: dict[str, object] = {
            "SubjectUserSid": self.user_sid(user),
            "SubjectUserName": user,
            "SubjectDomainName": NETBIOS,
            "SubjectLogonId": "0x" + ctx.ids.hex(7),
            "ObjectType": "File",
            "IpAddress": ip,
            "IpPort": str(49152 + ts // 1000 % 16000),
            "ShareName": share,
            "ShareLocalPath": "\\??\\D:\\Shares\\" + share.rsplit("\\", 1)[-1],
            "AccessMask": "0x1",
            "AccessList": "%%4416\r\n\t\t\t\t",
        }
        return self._event(ctx, host, ts, 5140, data)

    def process(
        self, ctx: DayContext, host: Asset, ts: int, account: Account | None, parent: str, image: str, cmd: str,
        elevated: bool = False,
    ) -> list[tuple[str, str]]:  # fmt: skip
        """A process start as both Security 4688 and Sysmon 1 (most fleets audit both)."""
        user = account.sam if account else f"{host.hostname}$"
        parent = parent.replace("{user}", user)
        image = image.replace("{user}", user)
        cmd = cmd.replace("{user}", user)
        pid = 1000 + (ts // 1000 + len(image) * 7919) % 15000
        ppid = 600 + (host.index * 31 + len(parent) * 7) % 9000
        logon_id = "0x" + ctx.ids.hex(6)
        security: dict[str, object] = {
            "SubjectUserSid": self.user_sid(user) if account else "S-1-5-18",
            "SubjectUserName": user,
            "SubjectDomainName": NETBIOS,
            "SubjectLogonId": logon_id if account else "0x3e7",
            "NewProcessId": hex(pid),
            "NewProcessName": image,
            "TokenElevationType": "%%1937" if elevated else "%%1936",
            "ProcessId": hex(ppid),
            "CommandLine": cmd,
            "TargetUserSid": "S-1-0-0",
            "TargetUserName": "-",
            "TargetDomainName": "-",
            "TargetLogonId": "0x0",
            "ParentProcessName": parent,
            "MandatoryLabel": "S-1-16-12288" if elevated else "S-1-16-8192",
        }
        first = self._event(ctx, host, ts, 4688, security)
        guid = "{" + ctx.ids.uuid4() + "}"
        sysmon: dict[str, object] = {
            "UtcTime": iso_utc_ms(ts - 3000).replace("T", " ").rstrip("Z"),
            "ProcessGuid": guid,
            "ProcessId": str(pid),
            "Image": image,
            "OriginalFileName": image.rsplit("\\", 1)[-1],
            "CommandLine": cmd,
            "CurrentDirectory": f"C:\\Users\\{user}\\" if account else "C:\\Windows\\system32\\",
            "User": f"{NETBIOS}\\{user}" if account else "NT AUTHORITY\\SYSTEM",
            "LogonGuid": "{" + ctx.ids.uuid4() + "}",
            "LogonId": logon_id if account else "0x3e7",
            "TerminalSessionId": "1" if account else "0",
            "IntegrityLevel": "High" if elevated else ("Medium" if account else "System"),
            "Hashes": "SHA256=" + ctx.ids.hex(64).upper(),
            "ParentProcessGuid": "{" + ctx.ids.uuid4() + "}",
            "ParentProcessId": str(ppid),
            "ParentImage": parent,
            "ParentCommandLine": parent if " " not in parent else f'"{parent}"',
            "AccountName": "SYSTEM",
            "Domain": "NT AUTHORITY",
            "AccountType": "User",
            "UserID": "S-1-5-18",
        }
        second = self._event(ctx, host, ts + 2000, 1, sysmon, event_type="INFO", log=SYSMON)
        return [first, second]

    def around_start(
        self, ctx: DayContext, host: Asset, ts: int, account: Account, image: str
    ) -> list[tuple[int, str, str]]:
        """What an endpoint logs around a program start besides the start: an image load,
        the system or a security agent opening the new process, registry writes, a file,
        PowerShell's script blocks (each with the chance in `AROUND_START`)."""
        user = account.sam
        image = image.replace("{user}", user)
        who = f"{NETBIOS}\\{user}"
        pid = str(1000 + (ts // 1000 + len(image) * 7919) % 15000)  # as process() numbers it
        guid = "{" + ctx.ids.uuid4() + "}"
        draw = ctx.ids.raw(6)
        load, access, value, key, file = (int(p * 256) for p in AROUND_START)
        out: list[tuple[int, str, str]] = []

        def add(offset_ms: int, event_id: int, data: dict[str, object], log: tuple[str, str, str] = SYSMON,
                event_type: str = "INFO") -> None:  # fmt: skip
            t = ts + offset_ms * 1000
            utc = iso_utc_ms(t).replace("T", " ").rstrip("Z")
            out.append((t, *self._event(ctx, host, t, event_id, {"RuleName": "-", "UtcTime": utc, **data}, event_type, log)))  # fmt: skip

        if draw[0] < load:
            module = LOADED_MODULES[(ts // 1000 + draw[5]) % len(LOADED_MODULES)]
            name = module.rsplit("\\", 1)[-1]
            add(2100, 7, {"ProcessGuid": guid, "ProcessId": pid, "Image": image, "ImageLoaded": module,
                          "FileVersion": "10.0.22621.3880", "Description": name, "Product": "Microsoft® Windows® Operating System",
                          "Company": "Microsoft Corporation", "OriginalFileName": name,
                          "Hashes": "SHA256=" + ctx.ids.hex(64).upper(), "Signed": "true",
                          "Signature": "Microsoft Windows", "SignatureStatus": "Valid", "User": who})  # fmt: skip
        if draw[1] < access:
            source, granted = PROCESS_OPENERS[(ts // 1000 + draw[5] // 7) % len(PROCESS_OPENERS)]
            add(2300, 10, {"SourceProcessGUID": "{" + ctx.ids.uuid4() + "}",
                           "SourceProcessId": str(400 + stable_int((host.asset_id, source)) % 4000),
                           "SourceThreadId": str(4000 + draw[5] * 13), "SourceImage": source,
                           "TargetProcessGUID": guid, "TargetProcessId": pid, "TargetImage": image,
                           "GrantedAccess": granted,
                           "CallTrace": "C:\\Windows\\SYSTEM32\\ntdll.dll+9f7f4|C:\\Windows\\System32\\KERNELBASE.dll+6d0be",
                           "SourceUser": "NT AUTHORITY\\SYSTEM", "TargetUser": who})  # fmt: skip
        target = (
            f"HKU\\{self.user_sid(user)}\\"
            + REGISTRY_KEYS[(ts // 1000 + draw[4]) % len(REGISTRY_KEYS)]
        )
        if draw[2] < value:
            add(2600, 13, {"EventType": "SetValue", "ProcessGuid": guid, "ProcessId": pid, "Image": image,
                           "TargetObject": target, "Details": "Binary Data", "User": who})  # fmt: skip
        if draw[3] < key:
            add(2500, 12, {"EventType": "CreateKey", "ProcessGuid": guid, "ProcessId": pid, "Image": image,
                           "TargetObject": target.rsplit("\\", 1)[0], "User": who})  # fmt: skip
        if draw[4] < file:
            created = iso_utc_ms(ts + 2_900_000).replace("T", " ").rstrip("Z")
            add(2900, 11, {"ProcessGuid": guid, "ProcessId": pid, "Image": image,
                           "TargetFilename": f"C:\\Users\\{user}\\AppData\\Local\\Temp\\{ctx.ids.hex(8)}.tmp",
                           "CreationUtcTime": created, "User": who})  # fmt: skip
        if image.lower().endswith("\\powershell.exe"):
            text = SCRIPT_BLOCKS[(ts // 1000 + draw[5]) % len(SCRIPT_BLOCKS)]
            add(3200, 4104, {"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": text,
                             "ScriptBlockId": ctx.ids.uuid4(), "Path": ""}, POWERSHELL_LOG, "VERBOSE")  # fmt: skip
        return out

    def network_connection(
        self,
        ctx: DayContext,
        host: Asset,
        ts: int,
        account: Account,
        image: str,
        dest: str,
        port: int,
    ) -> tuple[str, str]:
        user = account.sam
        data: dict[str, object] = {
            "UtcTime": iso_utc_ms(ts - 1000).replace("T", " ").rstrip("Z"),
            "ProcessGuid": "{" + ctx.ids.uuid4() + "}",
            "ProcessId": str(1000 + (host.index * 131 + len(image) * 7919) % 15000),
            "Image": image.replace("{user}", user),
            "User": f"{NETBIOS}\\{user}",
            "Protocol": "tcp",
            "Initiated": "true",
            "SourceIsIpv6": "false",
            "SourceIp": host.ip,
            "SourceHostname": f"{host.hostname}.{DOMAIN}",
            "SourcePort": str(49152 + ts // 1000 % 16000),
            "SourcePortName": "-",
            "DestinationIsIpv6": "false",
            "DestinationIp": dest,
            "DestinationHostname": "-",
            "DestinationPort": str(port),
            "DestinationPortName": "https" if port == 443 else "-",
            "AccountName": "SYSTEM",
            "Domain": "NT AUTHORITY",
            "AccountType": "User",
            "UserID": "S-1-5-18",
        }
        return self._event(ctx, host, ts, 3, data, event_type="INFO", log=SYSMON)
