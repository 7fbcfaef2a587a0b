"""Remove models from existing migration files by editing their syntax tree (libcst), leaving
every other operation and the file's formatting as they were. Plain module: text in, text out."""
from dataclasses import dataclass, field

import libcst as cst

# Operations that name their model with `name` (first positional argument)...
BY_NAME = {
    "CreateModel", "DeleteModel", "AlterModelOptions", "AlterModelTable", "AlterModelManagers",
    "AlterUniqueTogether", "AlterIndexTogether", "AlterOrderWithRespectTo", "AlterModelTableComment",
}
# ...and those that name it with `model_name` (first positional argument).
BY_MODEL_NAME = {
    "AddField", "RemoveField", "AlterField", "RenameField", "AddIndex", "RemoveIndex", "RenameIndex",
    "AddConstraint", "RemoveConstraint", "AlterConstraint",
}
NESTED = {"SeparateDatabaseAndState"}


@dataclass
class Removal:
    names: set  # lower-case model names, including the names the model had before a RenameModel
    removed: list = field(default_factory=list)  # (operation, model) in the order found


def _op_name(call):
    func = call.func
    if isinstance(func, cst.Attribute):
        return func.attr.value
    if isinstance(func, cst.Name):
        return func.value
    return None


def _arg(call, keyword, position):
    """The literal string value of an argument given by keyword or position, else None."""
    for i, arg in enumerate(call.args):
        if (arg.keyword and arg.keyword.value == keyword) or (arg.keyword is None and i == position):
            if isinstance(arg.value, (cst.SimpleString, cst.ConcatenatedString)):
                value = arg.value.evaluated_value
                return value if isinstance(value, str) else None
            return None
    return None


def model_of(call):
    """The (lower-case) model an operation call is about, or None."""
    op = _op_name(call)
    if op in BY_NAME:
        value = _arg(call, "name", 0)
    elif op in BY_MODEL_NAME:
        value = _arg(call, "model_name", 0)
    elif op == "RenameModel":
        value = _arg(call, "new_name", 1)
    else:
        return None
    return value.lower() if value else None


class _Remover(cst.CSTTransformer):
    def __init__(self, removal):
        self.removal = removal

    def leave_Element(self, original, updated):
        value = updated.value
        if isinstance(value, cst.Call):
            model = model_of(value)
            if model and model in self.removal.names:
                self.removal.removed.append((_op_name(value), model))
                return cst.RemovalSentinel.REMOVE
        return updated


class _Renames(cst.CSTVisitor):
    def __init__(self):
        self.pairs = []  # (old, new), lower-case

    def visit_Call(self, node):
        if _op_name(node) == "RenameModel":
            old, new = _arg(node, "old_name", 0), _arg(node, "new_name", 1)
            if old and new:
                self.pairs.append((old.lower(), new.lower()))


def former_names(sources, models):
    """The models' names plus every name they had before a RenameModel in these sources."""
    pairs = []
    for text in sources:
        visitor = _Renames()
        cst.parse_module(text).visit(visitor)
        pairs += visitor.pairs
    names = {m.lower() for m in models}
    changed = True
    while changed:
        changed = False
        for old, new in pairs:
            if new in names and old not in names:
                names.add(old)
                changed = True
    return names


def remove_models(source, names):
    """(new source, [(operation, model)]) with every operation on `names` removed."""
    removal = Removal(names={n.lower() for n in names})
    module = cst.parse_module(source)
    new = module.visit(_Remover(removal))
    return new.code, removal.removed
