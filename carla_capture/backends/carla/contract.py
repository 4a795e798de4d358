"""Every part of the ``carla`` client module the CARLA backend uses, with the call shapes it uses.

``tests/carla_capture/test_carla_contract.py`` checks each entry against the installed
``carla==0.9.16`` client (names exist; positional and keyword arguments fit the Boost.Python
signature) and against the test double, so the backend cannot drift from either.
"""

from __future__ import annotations

from dataclasses import dataclass

from carla_capture.config import CARLA_PRESETS, WEATHER_FIELDS

#: Blueprint attributes the backend sets, per blueprint id pattern (CARLA 0.9.16 blueprint docs);
#: the test double refuses any other name, like the server does.
BLUEPRINT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sensor.camera.*": ("image_size_x", "image_size_y", "fov", "sensor_tick", "role_name"),
    "vehicle.*": ("role_name",),
    "walker.pedestrian.*": ("role_name",),
    "controller.ai.walker": (),  # role_name only where has_attribute says so
}


@dataclass(frozen=True)
class Use:
    """One use: ``owner`` is a class path in the module ("" for the module itself)."""

    owner: str
    member: str
    args: int = 0
    kwargs: tuple[str, ...] = ()
    attribute: bool = False


def _attrs(owner: str, *names: str) -> tuple[Use, ...]:
    return tuple(Use(owner, n, attribute=True) for n in names)


CONTRACT: tuple[Use, ...] = (
    Use("Client", "__init__", 2),
    Use("Client", "set_timeout", 1),
    Use("Client", "get_server_version"),
    Use("Client", "get_client_version"),
    Use("Client", "get_available_maps"),
    Use("Client", "get_world"),
    Use("Client", "load_world", 1),
    Use("Client", "get_trafficmanager", 1),
    Use("Client", "apply_batch_sync", 2),
    Use("World", "get_settings"),
    Use("World", "apply_settings", 1),
    Use("World", "tick", 1),
    Use("World", "get_map"),
    Use("World", "get_blueprint_library"),
    Use("World", "spawn_actor", 3),
    Use("World", "try_spawn_actor", 3),
    Use("World", "get_actors"),
    Use("World", "get_snapshot"),
    Use("WorldSnapshot", "find", 1),
    *_attrs("WorldSnapshot", "frame"),
    Use("ActorSnapshot", "get_transform"),
    Use("ActorList", "filter", 1),
    Use("World", "get_actor", 1),
    Use("World", "set_weather", 1),
    Use("World", "set_pedestrians_seed", 1),
    Use("World", "get_random_location_from_navigation"),
    *_attrs("WorldSettings", "synchronous_mode", "fixed_delta_seconds"),
    Use("Map", "get_spawn_points"),
    *_attrs("Map", "name"),
    Use("BlueprintLibrary", "find", 1),
    Use("BlueprintLibrary", "filter", 1),
    Use("ActorBlueprint", "set_attribute", 2),
    Use("ActorBlueprint", "has_attribute", 1),
    *_attrs("ActorBlueprint", "id"),
    Use("Actor", "get_transform"),
    Use("Actor", "set_transform", 1),
    Use("Actor", "destroy"),
    *_attrs("Actor", "id", "type_id", "attributes"),
    Use("Vehicle", "set_autopilot", 2),
    Use("Sensor", "listen", 1),
    Use("Sensor", "stop"),
    Use("WalkerAIController", "start"),
    Use("WalkerAIController", "go_to_location", 1),
    Use("WalkerAIController", "set_max_speed", 1),
    Use("WalkerAIController", "stop"),
    Use("TrafficManager", "set_synchronous_mode", 1),
    Use("TrafficManager", "set_random_device_seed", 1),
    *_attrs("Image", "raw_data", "width", "height", "frame", "timestamp", "transform"),
    Use("Transform", "__init__", 2),
    Use("Transform", "transform", 1),
    *_attrs("Transform", "location", "rotation"),
    Use("Location", "__init__", 0, ("x", "y", "z")),
    Use("Location", "distance", 1),
    *_attrs("Location", "x", "y", "z"),
    Use("Rotation", "__init__", 0, ("pitch", "yaw", "roll")),
    *_attrs("Rotation", "pitch", "yaw", "roll"),
    Use("WeatherParameters", "__init__", 0, WEATHER_FIELDS),
    *_attrs("WeatherParameters", *WEATHER_FIELDS, *CARLA_PRESETS),
    Use("command.SpawnActor", "__init__", 2),
    Use("command.SpawnActor", "__init__", 3),  # (blueprint, transform, parent_id)
    Use("command.SpawnActor", "then", 1),
    Use("command.SetAutopilot", "__init__", 3),
    Use("command.DestroyActor", "__init__", 1),
    Use("command", "FutureActor", attribute=True),
    *_attrs("command.Response", "error", "actor_id"),
)
