<#
.SYNOPSIS
    Writes this Hyper-V host's VMs and memory to one JSON file for `vmmem scenario import`.

.DESCRIPTION
    Run it on the Hyper-V host, in Windows PowerShell 5.1 or PowerShell 7, as a member of
    Administrators or Hyper-V Administrators. It only reads: nothing on the host is changed.

    The file it writes (JSON, written with Out-File -Encoding utf8) holds:

      Format, FormatVersion    "vmmem-hyperv-export", 1
      ExportedAt               when, in UTC ("\/Date(ms)\/" in 5.1, ISO 8601 in 7)
      PSVersion                the PowerShell that wrote it
      VMHost                   Get-VMHost: Name, ComputerName, MemoryCapacity (bytes),
                               LogicalProcessorCount, VirtualMachinePath,
                               VirtualHardDiskPath, NumaSpanningEnabled
      MemoryReserve            the root reserve an administrator set, in MB: the registry value
                               HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\
                               Virtualization\MemoryReserve; null when it is not set
      BalancerAvailableMemory  the Dynamic Memory balancer's memory left for VMs, in MB
                               (\Hyper-V Dynamic Memory Balancer(System Balancer)\Available
                               Memory); null when the counter cannot be read. Without
                               MemoryReserve, vmmem estimates the root reserve as
                               MemoryCapacity - this - the running VMs' MemoryAssigned.
      VM                       Get-VM | Select-Object Name, State, Generation, ProcessorCount,
                               DynamicMemoryEnabled, MemoryStartup, MemoryMinimum,
                               MemoryMaximum, MemoryAssigned, MemoryDemand,
                               AutomaticStartAction, AutomaticStartDelay, AutomaticStopAction,
                               SmartPagingFilePath, Path (State and the two actions written
                               as their names, e.g. "Running", "StartIfRunning", "Save")
      VMMemory                 Get-VMMemory -VMName *: VMName, DynamicMemoryEnabled, Startup,
                               Minimum, Maximum, Buffer, Priority

    Sizes are bytes unless named MB. Take the file to any machine with vmmem, then:

      vmmem scenario import HV01-vmmem.json -o hv01.toml   # a scenario you can read and edit
      vmmem plan HV01-vmmem.json                           # or plan the export directly

    The same can be exported by hand, one command per file (vmmem recognises each by its
    content), though without the root reserve:

      Get-VM | Select-Object Name, State, Generation, ProcessorCount, DynamicMemoryEnabled,
        MemoryStartup, MemoryMinimum, MemoryMaximum, MemoryAssigned, MemoryDemand,
        AutomaticStartAction, AutomaticStartDelay, AutomaticStopAction, SmartPagingFilePath,
        Path | ConvertTo-Json | Out-File vm.json
      Get-VMMemory -VMName * | ConvertTo-Json | Out-File vmmemory.json
      Get-VMHost | ConvertTo-Json | Out-File vmhost.json

    See docs/IMPORT.md in vmmem.

.PARAMETER Path
    The file to write. Default: <computer name>-vmmem.json in the current folder.

.EXAMPLE
    .\Export-VmmemHost.ps1
    Writes .\HV01-vmmem.json on the host HV01.

.EXAMPLE
    .\Export-VmmemHost.ps1 -Path \\fileserver\exports\hv01.json

.NOTES
    Needs the Hyper-V PowerShell module (Windows Server 2016 or later, or Windows 10/11 with
    Hyper-V). A performance counter read fails on a host whose counter names are localised;
    the export then says null and vmmem asks for the reserve.
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0)]
    [string]$Path = (Join-Path -Path (Get-Location).ProviderPath -ChildPath "$env:COMPUTERNAME-vmmem.json")
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
Import-Module -Name Hyper-V

$vmHost = Get-VMHost | Select-Object -Property Name, ComputerName, MemoryCapacity,
    LogicalProcessorCount, VirtualMachinePath, VirtualHardDiskPath, NumaSpanningEnabled

# Enums as their names: Windows PowerShell 5.1's ConvertTo-Json would write integers, and
# PowerShell 7 does too without -EnumsAsStrings.
$vms = @(Get-VM | Select-Object -Property Name,
    @{ Name = 'State'; Expression = { [string]$_.State } },
    Generation, ProcessorCount, DynamicMemoryEnabled,
    MemoryStartup, MemoryMinimum, MemoryMaximum, MemoryAssigned, MemoryDemand,
    @{ Name = 'AutomaticStartAction'; Expression = { [string]$_.AutomaticStartAction } },
    AutomaticStartDelay,
    @{ Name = 'AutomaticStopAction'; Expression = { [string]$_.AutomaticStopAction } },
    SmartPagingFilePath, Path)

$memory = @()
if ($vms.Count -gt 0) {
    $memory = @(Get-VMMemory -VMName * | Select-Object -Property VMName, DynamicMemoryEnabled,
        Startup, Minimum, Maximum, Buffer, Priority)
}

# The root reserve, when an administrator set one (MB).
$reserve = $null
$virtualization = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization'
$item = Get-ItemProperty -Path $virtualization -Name MemoryReserve -ErrorAction SilentlyContinue
if ($null -ne $item) {
    $reserve = [int64]$item.MemoryReserve
}

# What the Dynamic Memory balancer can still give to VMs (MB).
$available = $null
try {
    $counter = '\Hyper-V Dynamic Memory Balancer(System Balancer)\Available Memory'
    $sample = (Get-Counter -Counter $counter -ErrorAction Stop).CounterSamples |
        Select-Object -First 1
    if ($null -ne $sample) {
        $available = [double]$sample.CookedValue
    }
} catch {
    Write-Warning ("Could not read the Dynamic Memory balancer's Available Memory counter " +
        "($($_.Exception.Message)); vmmem will ask for the root reserve.")
}

$export = [ordered]@{
    Format                  = 'vmmem-hyperv-export'
    FormatVersion           = 1
    ExportedAt              = [DateTime]::UtcNow
    PSVersion               = $PSVersionTable.PSVersion.ToString()
    VMHost                  = $vmHost
    MemoryReserve           = $reserve
    BalancerAvailableMemory = $available
    VM                      = $vms
    VMMemory                = $memory
}

# -Depth 4: the default depth (2) would write each VM as text ("@{Name=...}").
ConvertTo-Json -InputObject $export -Depth 4 | Out-File -FilePath $Path -Encoding utf8

$running = @($vms | Where-Object { $_.State -eq 'Running' }).Count
Write-Host ("Wrote $Path`: host $($vmHost.Name), $($vms.Count) VMs ($running running). " +
    "Next, where vmmem is installed: vmmem scenario import $(Split-Path -Leaf $Path)")
