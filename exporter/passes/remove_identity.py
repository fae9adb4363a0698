"""Drop inference no-ops (Dropout and friends) by rewiring their readers."""


def rename_input(graph, old: str, new: str) -> None:
    for n in graph.nodes:
        n.inputs = [new if t == old else t for t in n.inputs]
    graph.outputs = [new if t == old else t for t in graph.outputs]


def remove_identities(graph) -> None:
    for node in [n for n in graph.nodes if n.op == "identity"]:
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs and src in graph.inputs:
            continue  # a model that is only Dropout still needs one copy
        graph.nodes.remove(node)
        del graph.tensors[dst]
        rename_input(graph, dst, src)
