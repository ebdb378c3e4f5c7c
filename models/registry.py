"""Name -> `BundledModel` lookup over the models shipped with lowbit."""

from lowbit.models import digits_cnn, digits_vit, minilm
from lowbit.models.bundled import BundledModel

_MODELS: dict[str, BundledModel] = {
    model.name: model for model in (digits_cnn.MODEL, digits_vit.MODEL, minilm.MODEL)
}


class UnknownModelError(KeyError):
    """No bundled model has the requested name; the message lists the available ones."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; available: {', '.join(model_names())}"


def model_names() -> list[str]:
    """Names of all bundled models, sorted."""
    return sorted(_MODELS)


def get_model(name: str) -> BundledModel:
    """The bundled model called `name`; raises `UnknownModelError` if there is none."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(name) from None
