; Inno Setup 6 script of the Windows installer. UNTESTED here (no Windows machine): see installer/README.md.
;
; Build on Windows, from the repository root, after `python installer\build.py --no-archive` has frozen
; build\installer\<variant>\dist\raddraft\ and WinSW-x64.exe (v2.x) has been put in installer\windows\:
;
;   for /f %v in ('python -c "import raddraft; print(raddraft.__version__)"') do ^
;     iscc /DAppVersion=%v /DVariant=cpu installer\windows\raddraft.iss
;
; AppVersion comes from raddraft.__version__ (the one version of the package); Variant is cpu or gpu.

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=X.Y.Z (raddraft.__version__)
#endif
#ifndef Variant
  #define Variant "cpu"
#endif
#define BundleDir "..\..\build\installer\" + Variant + "\dist\raddraft"

[Setup]
AppId={{6B0F3C52-5E7B-4C1B-9B7E-2B7C3D0F8A11}
AppName=RadDraft
AppVersion={#AppVersion}
AppPublisher=RadDraft
DefaultDirName={autopf}\RadDraft
DefaultGroupName=RadDraft
DisableProgramGroupPage=yes
OutputDir=..\..\build\installer\{#Variant}
OutputBaseFilename=raddraft-{#AppVersion}-windows-x64{#Variant == "gpu" ? "-gpu" : ""}-setup
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
PrivilegesRequired=admin
UninstallDisplayIcon={app}\raddraft.exe
; Upgrades stop the service first (below) so no file is in use.
CloseApplications=yes

[Tasks]
Name: "service"; Description: "Run the DICOM node as a Windows service (receives and drafts studies without the app open)"
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Dirs]
; The service (LocalService) writes the store here; readers' apps open the same store.
Name: "{commonappdata}\RadDraft"; Permissions: users-modify localservice-modify
Name: "{commonappdata}\RadDraft\store"; Permissions: users-modify localservice-modify
Name: "{commonappdata}\RadDraft\logs"; Permissions: localservice-modify

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "WinSW-x64.exe"; DestDir: "{app}"; DestName: "raddraft-service.exe"; Flags: ignoreversion
Source: "raddraft-service.xml"; DestDir: "{app}"; Flags: ignoreversion
Source: "raddraft.toml"; DestDir: "{commonappdata}\RadDraft"; Flags: onlyifdoesntexist uninsneveruninstall

[Icons]
Name: "{group}\RadDraft"; Filename: "{app}\raddraft.exe"; Parameters: "app --config ""{commonappdata}\RadDraft\raddraft.toml"""
Name: "{group}\RadDraft self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\raddraft.exe"" self-test"
Name: "{autodesktop}\RadDraft"; Filename: "{app}\raddraft.exe"; Parameters: "app --config ""{commonappdata}\RadDraft\raddraft.toml"""; Tasks: desktopicon

[Run]
; The installation check: the whole chain on the bundled phantom study; a failure is shown, not hidden.
Filename: "{app}\raddraft.exe"; Parameters: "self-test"; StatusMsg: "Checking the installation (raddraft self-test)..."; Flags: runhidden waituntilterminated
Filename: "{app}\raddraft-service.exe"; Parameters: "install"; StatusMsg: "Registering the RadDraft service..."; Flags: runhidden waituntilterminated; Tasks: service
Filename: "{app}\raddraft-service.exe"; Parameters: "start"; Flags: runhidden waituntilterminated; Tasks: service

[UninstallRun]
Filename: "{app}\raddraft-service.exe"; Parameters: "stop"; Flags: runhidden waituntilterminated; RunOnceId: "StopService"
Filename: "{app}\raddraft-service.exe"; Parameters: "uninstall"; Flags: runhidden waituntilterminated; RunOnceId: "RemoveService"

[Code]
// Stop a running service before files are replaced on upgrade.
function PrepareToInstall(var NeedsRestart: Boolean): String;
var
  ResultCode: Integer;
begin
  if FileExists(ExpandConstant('{app}\raddraft-service.exe')) then
    Exec(ExpandConstant('{app}\raddraft-service.exe'), 'stop', '', SW_HIDE, ewWaitUntilTerminated, ResultCode);
  Result := '';
end;
