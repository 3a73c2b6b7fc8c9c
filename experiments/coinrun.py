"""The Genie CoinRun case study (Bruce et al. 2024, appendix), sized for one GPU.

64x64 frames, 16-frame clips; tokenizer patch 4 (256 tokens per frame), 1024 codes of
dimension 32, 8 layers of width 512, batch 48 for 300k steps; LAM with 6 codes, batch 36,
200k steps at learning rate 3e-5; MaskGIT dynamics sampled with 25 steps at temperature 1.
The LAM and dynamics model are trained in sequence here (the paper co-trains them).
"""

from genie.config import (
    Config,
    DataConfig,
    DynamicsConfig,
    LAMConfig,
    TokenizerConfig,
    TrainConfig,
    TransformerConfig,
)


def get_config() -> Config:
    genie_width = TransformerConfig(width=512, depth=8, heads=8, mlp_ratio=4.0)
    return Config(
        name="coinrun",
        dtype="bfloat16",
        data=DataConfig(dataset="coinrun", clip_frames=16, image_size=64, worker_count=8),
        tokenizer=TokenizerConfig(
            patch_size=4, num_codes=1024, code_dim=32, encoder=genie_width, decoder=genie_width
        ),
        lam=LAMConfig(
            patch_size=16, num_codes=6, code_dim=32, encoder=genie_width, decoder=genie_width
        ),
        dynamics=DynamicsConfig(
            transformer=TransformerConfig(width=512, depth=12, heads=8, mlp_ratio=4.0),
            maskgit_steps=25,
            temperature=1.0,
        ),
        train_tokenizer=TrainConfig(
            batch_size=48,
            steps=300_000,
            learning_rate=3e-4,
            warmup_steps=5_000,
            log_every=100,
            image_every=5_000,
            checkpoint_every=5_000,
        ),
        train_lam=TrainConfig(
            batch_size=36,
            steps=200_000,
            learning_rate=3e-5,
            warmup_steps=5_000,
            log_every=100,
            image_every=5_000,
            checkpoint_every=5_000,
        ),
        train_dynamics=TrainConfig(
            batch_size=36,
            steps=200_000,
            learning_rate=3e-5,
            warmup_steps=5_000,
            log_every=100,
            image_every=5_000,
            checkpoint_every=5_000,
        ),
    )
