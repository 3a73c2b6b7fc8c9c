"""All three stages on 2 CPU cores in about ten minutes: what `make demo` runs.

Far smaller than the Genie CoinRun case study (see coinrun.py): patch 8 gives 8x8 tokens per
64x64 frame, clips are cut to 8 frames, and every transformer is 64 wide and 2 deep.
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
    small = TransformerConfig(width=64, depth=2, heads=4, mlp_ratio=4.0)
    return Config(
        name="coinrun_tiny",
        data=DataConfig(dataset="coinrun_tiny", clip_frames=8, image_size=64),
        tokenizer=TokenizerConfig(
            patch_size=8,
            num_codes=256,
            code_dim=16,
            encoder=small,
            decoder=small,
            dead_code_steps=50,
        ),
        lam=LAMConfig(
            patch_size=16,
            num_codes=6,
            code_dim=16,
            encoder=small,
            decoder=small,
            dead_code_steps=50,
        ),
        dynamics=DynamicsConfig(transformer=small, maskgit_steps=8),
        train_tokenizer=TrainConfig(
            batch_size=8,
            steps=600,
            learning_rate=1e-3,
            warmup_steps=50,
            image_every=300,
            checkpoint_every=300,
        ),
        train_lam=TrainConfig(
            batch_size=8,
            steps=600,
            learning_rate=1e-3,
            warmup_steps=50,
            image_every=300,
            checkpoint_every=300,
        ),
        train_dynamics=TrainConfig(
            batch_size=8,
            steps=800,
            learning_rate=1e-3,
            warmup_steps=50,
            image_every=400,
            checkpoint_every=400,
        ),
    )
