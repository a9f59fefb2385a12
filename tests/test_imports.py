"""The package's import graph has no cycles: no two llmjax modules import each other, directly
or through others, counting imports inside functions too."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "llmjax"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from pkg import mod` imports the module pkg.mod when there is one.
        targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                   else node.module for alias in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_cycle_finder_finds_a_cycle_through_a_third_module():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_llmjax_modules_import_each_other():
  graph = import_graph()
  assert "llmjax.train.trainer" in graph and graph["llmjax.train.lm"]  # the walk saw the code
  assert cycles(graph) == []


SYSTEMS = PACKAGE / "experiments"


def system_packages() -> list[str]:
  """The research systems: the packages under llmjax/experiments/."""
  return sorted(p.name for p in SYSTEMS.iterdir() if (p / "__init__.py").exists())


def system_of(module: str) -> str | None:
  parts = module.split(".")
  if parts[:2] == ["llmjax", "experiments"] and len(parts) > 2 and parts[2] in system_packages():
    return parts[2]
  return None


def layering_violations(graph: dict[str, set[str]], system=system_of) -> list[str]:
  """Arrows from the engine up into a system, and from one system into another."""
  found = []
  for module, targets in sorted(graph.items()):
    for target in sorted(targets):
      source_system, target_system = system(module), system(target)
      if target_system is not None and source_system != target_system:
        found.append(f"{module} -> {target}")
  return found


def test_the_layering_check_finds_arrows_up_and_across():
  toy = {"engine.a": {"sys_x.b"}, "sys_x.b": {"engine.a", "sys_y.c"}, "sys_y.c": {"sys_y.d"},
         "sys_y.d": set()}

  def system(module):
    return module.split(".")[0] if module.startswith("sys_") else None

  assert layering_violations(toy, system) == ["engine.a -> sys_x.b", "sys_x.b -> sys_y.c"]


def test_no_system_imports_another_and_the_engine_imports_none():
  graph = import_graph()
  assert system_packages() == ["biggen", "cot_encyclopedia", "coverage", "flask", "grokking",
                               "knowledge_entropy", "music_judge", "preference", "self_explore",
                               "sentence_lm"]
  # the walk saw arrows into systems from within (so an arrow across would be seen too)
  assert "llmjax.experiments.grokking.symmetry" in graph["llmjax.experiments.grokking.experiment"]
  assert layering_violations(graph) == []


def test_the_shared_rooms_hold_only_what_several_systems_or_the_engine_use():
  graph = import_graph()
  users: dict[str, set[str]] = {}
  for module, targets in graph.items():
    for target in targets:
      users.setdefault(target, set()).add(system_of(module) or "engine")
  shared = [m for m in graph if m.split(".")[:2] in (["llmjax", "analysis"], ["llmjax", "tasks"],
                                                     ["llmjax", "evals"]) and m.count(".") == 2]
  assert "llmjax.analysis.logistic" in shared and "llmjax.tasks.math_answers" in shared
  single = {m: users.get(m, set()) for m in shared
            if "engine" not in users.get(m, set()) and len(users.get(m, set())) < 2}
  assert single == {}


def test_every_system_has_its_readme_and_the_flat_room_names_no_system():
  for name in system_packages():
    readme = SYSTEMS / name / "README.md"
    assert readme.exists(), f"{readme} is missing"
  prefixed = [p.name for p in SYSTEMS.glob("*.py")
              if any(p.stem.startswith(name) for name in system_packages())]
  assert prefixed == []


def test_the_top_readme_links_every_system_readme_and_stays_short():
  readme = (PACKAGE.parent / "README.md").read_text()
  assert len(readme.splitlines()) < 250
  for name in system_packages():
    assert f"](llmjax/experiments/{name}/README.md)" in readme, name
