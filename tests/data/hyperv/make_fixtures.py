"""Writes the fixtures in this folder: what PowerShell writes on a Hyper-V host, from Microsoft's
documented property names and values (Get-VM, Get-VMMemory, Get-VMHost; enums as PowerShell's
VMState and Msvm_VirtualSystemSettingData define them). They cannot be made here (no Hyper-V),
so this script records how each was shaped; run it from this folder to write them again.

The host, HV-LAB01: 1536 MB, a static domain controller and two dynamic web VMs running, a test
VM off (set to start with the host). A patch night restarting the three running VMs needs
1536 MB; with the root reserve the host cannot give that much.
"""

import codecs
import json

MB = 1 << 20


def ps51_json(obj):
    # ConvertTo-Json's layout in Windows PowerShell 5.1: four-space indent, two spaces after ':'
    return json.dumps(obj, indent=4, ensure_ascii=False).replace('": ', '":  ')


def vm(name, state, dyn, st, mn, mx, assigned, demand, start, delay, stop, gen=2, cpu=2):
    return {
        "Name": name,
        "State": state,
        "Generation": gen,
        "ProcessorCount": cpu,
        "DynamicMemoryEnabled": dyn,
        "MemoryStartup": st,
        "MemoryMinimum": mn,
        "MemoryMaximum": mx,
        "MemoryAssigned": assigned,
        "MemoryDemand": demand,
        "AutomaticStartAction": start,
        "AutomaticStartDelay": delay,
        "AutomaticStopAction": stop,
        "SmartPagingFilePath": "C:\\ProgramData\\Microsoft\\Windows\\Hyper-V",
        "Path": f"D:\\Hyper-V\\{name}",
    }


# Windows PowerShell 5.1 writes enums as integers: VMState Running 2, Off 3; StartAction
# Nothing 2, StartIfRunning 3, Start 4; StopAction TurnOff 2, Save 3, ShutDown 4.
VMS_51 = [
    vm("dc01", 2, False, 512 * MB, 512 * MB, 1048576 * MB, 512 * MB, 0, 4, 0, 4),
    vm("web01", 2, True, 512 * MB, 256 * MB, 1024 * MB, 300 * MB, 250 * MB, 3, 0, 3),
    vm("web02", 2, True, 512 * MB, 256 * MB, 1024 * MB, 264 * MB, 220 * MB, 3, 0, 3),
    vm("test01", 3, True, 1024 * MB, 512 * MB, 2048 * MB, 0, 0, 4, 0, 2, cpu=4),
]


def mem(vmname, dyn, st, mn, mx, buf, prio):
    return {
        "ResourcePoolName": "Primordial",
        "Buffer": buf,
        "DynamicMemoryEnabled": dyn,
        "Maximum": mx,
        "MaximumPerNumaNode": 1536,
        "Minimum": mn,
        "Priority": prio,
        "Startup": st,
        "Name": "Memory",
        "Id": "Microsoft:4764334D-E001-4176-82EE-5594EC9B530E\\4764334D",
        "VMId": "4764334d-e001-4176-82ee-5594ec9b530e",
        "VMName": vmname,
        "VMSnapshotId": "00000000-0000-0000-0000-000000000000",
        "VMSnapshotName": "",
        "CimSession": "CimSession: .",
        "ComputerName": "HV-LAB01",
        "IsDeleted": False,
    }


MEMORY = [
    mem("dc01", False, 512 * MB, 512 * MB, 1048576 * MB, 20, 80),
    mem("web01", True, 512 * MB, 256 * MB, 1024 * MB, 20, 50),
    mem("web02", True, 512 * MB, 256 * MB, 1024 * MB, 20, 50),
    mem("test01", True, 1024 * MB, 512 * MB, 2048 * MB, 10, 10),
]
HOST = {
    "ComputerName": "HV-LAB01",
    "LogicalProcessorCount": 4,
    "MemoryCapacity": 1536 * MB,
    "Name": "HV-LAB01",
    "FullyQualifiedDomainName": "HV-LAB01.lab.example",
    "MacAddressMinimum": "00155D012A00",
    "MacAddressMaximum": "00155D012AFF",
    "MaximumStorageMigrations": 2,
    "MaximumVirtualMachineMigrations": 2,
    "NumaSpanningEnabled": True,
    # Nested objects two levels down: ConvertTo-Json's default depth writes their type names.
    "NumaStatus": ["Microsoft.HyperV.PowerShell.VMNumaNodeStatus"],
    "ExternalNetworkAdapters": [],
    "InternalNetworkAdapters": ["Microsoft.HyperV.PowerShell.VMInternalNetworkAdapter"],
    "ResourceMeteringSaveInterval": {
        "Ticks": 36000000000,
        "Days": 0,
        "Hours": 1,
        "Milliseconds": 0,
        "Minutes": 0,
        "Seconds": 0,
        "TotalDays": 0.041666666666666664,
        "TotalHours": 1,
        "TotalMilliseconds": 3600000,
        "TotalMinutes": 60,
        "TotalSeconds": 3600,
    },
    "VirtualHardDiskPath": "D:\\Hyper-V\\Virtual Hard Disks",
    "VirtualMachinePath": "D:\\Hyper-V",
    "VirtualMachineMigrationEnabled": False,
    "VirtualMachineMigrationAuthenticationType": 0,
    "EnableEnhancedSessionMode": False,
    "IovSupport": False,
}
NAMES = {
    "State": {2: "Running", 3: "Off"},
    "AutomaticStartAction": {2: "Nothing", 3: "StartIfRunning", 4: "Start"},
    "AutomaticStopAction": {2: "TurnOff", 3: "Save", 4: "ShutDown"},
}


def as_strings(v):
    return {k: NAMES[k][x] if k in NAMES else x for k, x in v.items()}


VMS_7 = [as_strings(v) for v in VMS_51]
MEM_PROPS = (
    "VMName",
    "DynamicMemoryEnabled",
    "Startup",
    "Minimum",
    "Maximum",
    "Buffer",
    "Priority",
)
HOST_PROPS = (
    "Name",
    "ComputerName",
    "MemoryCapacity",
    "LogicalProcessorCount",
    "VirtualMachinePath",
    "VirtualHardDiskPath",
    "NumaSpanningEnabled",
)


def selected_memory():
    return [{k: m[k] for k in MEM_PROPS} for m in MEMORY]


def write_utf16le(name, text):
    # `... | ConvertTo-Json > file` and Out-File in 5.1: UTF-16 LE with a BOM, CRLF lines
    with open(name, "wb") as f:
        f.write(codecs.BOM_UTF16_LE + text.replace("\n", "\r\n").encode("utf-16-le"))


def main():
    write_utf16le("ps51-vm.json", ps51_json(VMS_51))
    write_utf16le("ps51-vmmemory.json", ps51_json(MEMORY))
    write_utf16le("ps51-vmhost.json", ps51_json(HOST))

    # tools/Export-VmmemHost.ps1 under PowerShell 7: UTF-8, ISO date, the balancer's Available
    # Memory (MB): the root reserve is estimated as 1536 - 360 - (512 + 300 + 264) = 100 MB.
    combined = {
        "Format": "vmmem-hyperv-export",
        "FormatVersion": 1,
        "ExportedAt": "2026-11-29T18:30:00.0000000+00:00",
        "PSVersion": "7.4.6",
        "VMHost": {k: HOST[k] for k in HOST_PROPS},
        "MemoryReserve": None,
        "BalancerAvailableMemory": 360,
        "VM": VMS_7,
        "VMMemory": selected_memory(),
    }
    with open("host-ps7.json", "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(combined, indent=2) + "\n")

    # The same script under Windows PowerShell 5.1: \/Date(ms)\/, the registry's MemoryReserve
    # (128 MB), Out-File -Encoding utf8 (UTF-8 with a BOM), CRLF.
    combined.update(
        ExportedAt="/Date(1795977000000)/",
        PSVersion="5.1.20348.2849",
        MemoryReserve=128,
        BalancerAvailableMemory=None,
    )
    text = ps51_json(combined).replace('"/Date(1795977000000)/"', '"\\/Date(1795977000000)\\/"')
    with open("host-ps51.json", "wb") as f:
        f.write(codecs.BOM_UTF8 + text.replace("\n", "\r\n").encode("utf-8"))

    # One VM: ConvertTo-Json writes an object, not an array (PowerShell 7, -EnumsAsStrings).
    with open("ps7-single-vm.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(VMS_7[1], indent=2) + "\n")
    with open("ps7-single-vmmemory.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(selected_memory()[1], indent=2) + "\n")

    # Combined by hand without -Depth: the objects two levels down were written as text.
    def text_of(v):
        shown = {True: "True", False: "False"}
        return "@{" + "; ".join(f"{k}={shown.get(x, x)}" for k, x in v.items()) + "}"

    truncated = {
        "VMHost": {k: HOST[k] for k in HOST_PROPS},
        "VM": [text_of(v) for v in VMS_7],
        "VMMemory": ["Microsoft.HyperV.PowerShell.VMMemory"] * len(MEMORY),
    }
    with open("truncated-depth.json", "w", encoding="utf-8") as f:
        f.write(ps51_json(truncated) + "\n")
    with open("truncated-vmmemory.json", "w", encoding="utf-8") as f:
        f.write(ps51_json(["Microsoft.HyperV.PowerShell.VMMemory"] * 2) + "\n")


if __name__ == "__main__":
    main()
