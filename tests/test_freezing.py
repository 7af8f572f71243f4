"""Only the additive net trains; gradients reach it through the frozen encoder blocks."""
import torch

from actrack_fast import build_model, parameter_counts


def teacher_forcing_loss(model, batch=2):
    cfg = model.config
    search = torch.randn(batch, 3, cfg.search_size, cfg.search_size)
    templates = torch.randn(batch, cfg.num_templates, 3, cfg.template_size, cfg.template_size)
    target = torch.randint(0, cfg.bins, (batch, 4))
    sequence = torch.cat([torch.full((batch, 1), cfg.start_token), target], dim=1)
    logits = model(search, templates, sequence[:, :4])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())


def test_parameter_counts():
    model = build_model("tiny")
    counts = parameter_counts(model)
    additive = sum(p.numel() for p in model.additive.parameters())
    assert counts["trainable"] == additive
    assert counts["frozen"] == sum(p.numel() for p in model.parameters()) - additive
    model.freeze(train_decoder=True)
    decoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("encoder.", "additive.")))
    assert parameter_counts(model)["trainable"] == additive + decoder


def test_encoder_gets_no_gradient_and_additive_net_does():
    model = build_model("tiny").train()
    assert not model.encoder.training and model.additive.training
    teacher_forcing_loss(model).backward()
    for name, param in model.named_parameters():
        if not name.startswith("additive."):
            assert param.grad is None, name
    # Injection 0 sits before every block: its gradient passed through all frozen blocks.
    for index in model.config.injected_blocks:
        grad = model.additive.injections[str(index)].weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, index


def test_gradient_reaches_the_conv_stem_once_injections_are_nonzero():
    model = build_model("tiny").train()
    teacher_forcing_loss(model).backward()
    # Zero projections block the stem's gradient (like ControlNet's zero convs) until one step moves them.
    assert model.additive.stem.stages[0][0].weight.grad.abs().sum() == 0
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    optimizer.step()
    optimizer.zero_grad()
    teacher_forcing_loss(model).backward()
    assert model.additive.stem.stages[0][0].weight.grad.abs().sum() > 0


def test_train_decoder_option_trains_the_decoder():
    model = build_model("tiny")
    model.freeze(train_decoder=True)
    model.train()
    teacher_forcing_loss(model).backward()
    assert model.decoder.body.layers[0].linear1.weight.grad.abs().sum() > 0
    assert model.encoder.body.blocks[0].attn.qkv.weight.grad is None
