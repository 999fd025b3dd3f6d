"""Environment overrides of params.yaml `serving:`, checked by the same rules as the file.

`TRITON_RETRIES=-1` or `TRITON_REQUEST_TIMEOUT_S=0` must fail like `retries: -1` in params.yaml
does, naming the variable, instead of reaching a client as an impossible setting.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from pipeline.params import ParamsError, ServingParams


def apply_env(params: ServingParams, env: Mapping[str, str], names: Mapping[str, str]) -> ServingParams:
    """`params` with the variables of `names` (variable -> `serving:` key) that `env` sets.

    An empty variable counts as unset. The values are strings, so they are parsed (lax mode), then
    held to every constraint of `ServingParams`; a violation raises ParamsError naming the variable.
    """
    given = {var: env[var] for var in names if env.get(var, "") != ""}
    if not given:
        return params
    changes = {names[var]: value for var, value in given.items()}
    try:
        return ServingParams.model_validate({**params.model_dump(), **changes}, strict=False)
    except ValidationError as error:
        by_key = {key: var for var, key in names.items()}
        problems = []
        for item in error.errors():
            key = str(item["loc"][0]) if item["loc"] else None
            message = str(item["msg"]).removeprefix("Value error, ")
            if key in by_key and by_key[key] in given:
                problems.append(f"{by_key[key]}={given[by_key[key]]!r}: {message} (as serving.{key} in params.yaml)")
            else:
                shown = ", ".join(f"{var}={value!r}" for var, value in given.items())
                problems.append(f"serving: {message} (with {shown})")
        raise ParamsError("bad environment override: " + "; ".join(problems)) from None
