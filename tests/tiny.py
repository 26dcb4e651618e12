"""Small real things several tests train or run."""
import textwrap

TRAIN_SCRIPT = textwrap.dedent("""
    import torch
    from fmops_nb.finetune import report, save_model
    w = torch.zeros(2, requires_grad=True); opt = torch.optim.SGD([w], lr=0.1)
    for step in range(1, 4):
        loss = ((w - 1) ** 2).sum(); loss.backward(); opt.step(); opt.zero_grad()
        report(step=step, loss=loss.item())
    save_model({'w': w})
""")  # a user's training script: three SGD steps on a 2-vector, then save_model
