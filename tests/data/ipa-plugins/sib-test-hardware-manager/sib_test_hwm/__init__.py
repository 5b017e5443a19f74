"""A custom hardware manager as a site would write one, for sles-ipa-builder's tests of ipa_plugins
(DIB_IPA_PLUGINS): the agent finds it through its entry point and logs "Hardware manager found".

It claims generic support and implements nothing more, so every call the agent dispatches falls
through to IPA's own GenericHardwareManager; its version shows in the inspection data."""

from ironic_python_agent import hardware


class SibTestHardwareManager(hardware.HardwareManager):
    HARDWARE_MANAGER_NAME = "SibTestHardwareManager"
    HARDWARE_MANAGER_VERSION = "1.0"

    def evaluate_hardware_support(self) -> int:
        return int(hardware.HardwareSupport.GENERIC)
