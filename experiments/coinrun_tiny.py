"""All three stages on 2 CPU cores in about 13.5 minutes: what `make demo` runs.

Far smaller than the Genie CoinRun case study (see coinrun.py): patch 8 gives 8x8 tokens per
64x64 frame, training reads random 8-frame windows of the 16-frame clips, and every
transformer is 64 wide and 2 deep.
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
    # 2500 steps, not 1500: on validation the codes tell left from right twice as well (NMI
    # with left/none/right 0.054 against 0.022; held-out probe 0.48 against 0.43, chance 0.37;
    # docs/ablations/lam.md, `defaults+s2500`). Not 2800: that run's codes told left from right
    # no better than chance on validation (probe 0.34, chance 0.38; docs/experiments.md).
    lam_schedule = TrainConfig(
        batch_size=8,
        steps=2500,
        learning_rate=1e-3,
        warmup_steps=50,
        image_every=500,
        checkpoint_every=500,
    )
    return Config(
        name="coinrun_tiny",
        data=DataConfig(dataset="coinrun_tiny", clip_frames=8, image_size=64),
        # Finite scalar quantisation with 8 levels in each of 6 numbers (18 bits per patch),
        # trained at 3e-3 for 3400 steps: 24.6 dB on validation against 22.8 for 8^4 at 1e-3 for
        # 2600 (docs/ablations/tokenizer.md). With the factorised dynamics head and soft digit
        # targets its world obeys its actions as much as 8^4's (ΔtPSNR@4 2.08 and 1.75 on two
        # seeds against 2.26 and 1.53) and rolls out 0.0-0.3 dB lower at t = 1..4, inside the
        # spread between seeds (docs/ablations/dynamics.md item 16).
        tokenizer=TokenizerConfig(
            patch_size=8,
            num_codes=8**6,
            code_dim=6,
            quantizer="fsq",
            fsq_levels=(8, 8, 8, 8, 8, 8),
            encoder=small,
            decoder=small,
            dead_code_steps=50,
        ),
        # The LAM options that made its codes follow what moves (docs/ablations/lam.md): a
        # decoder that reads x_t alone and moves its pixels with per-patch kernels, an encoder
        # that reads a local motion cost volume, and a reconstruction loss in units of the
        # repeat-the-last-frame error. Genie's own LAM (all history, pixel output, pixel MSE)
        # collapsed to one or two codes at this budget. The decoder also reads the motion so
        # far and weights the centre, where the agent turns with the horizontal action: that
        # made the codes tell left from right at all (NMI with left/none/right 0.03 instead of
        # 0.004, on two seeds).
        # Patch 8, not 16: each 8x8 patch gets its own resampling kernel and cost volume, so the
        # agent's sprite has patches of its own; the codes tell the actions apart better on both
        # seeds measured (validation NMI 0.152 and 0.167 against 0.133 and 0.116; left/none/right
        # probe 0.494 and 0.527 against 0.483 and 0.462, chance 0.372; docs/ablations/lam.md,
        # item 13).
        lam=LAMConfig(
            patch_size=8,
            num_codes=6,
            code_dim=16,
            encoder=small,
            decoder=small,
            dead_code_steps=50,
            decoder_context="last",
            decoder_output="kernels",
            motion_size=5,
            reconstruction_loss="relative",
            decoder_motion=True,
            center_weight=10.0,
        ),
        # The copy prior starts the model at "repeat the last frame", which it must beat, and a
        # higher learning rate lets 800 steps learn what changes (docs/ablations/dynamics.md:
        # rollout minus repeat-last-frame -1.3, -0.2, +0.2, +0.3 dB at t = 1..4 on validation,
        # mean of two seeds, against -3.5, -2.0, -1.1, -0.7 dB without either). More steps
        # make the actions matter more: ΔtPSNR@4 0.37-0.42 dB at 1600 x 4 on two seeds against
        # 0.12-0.19 at 800 x 8, same compute. The factorised head (each of the FSQ tokenizer's
        # four numbers with its own 4-way softmax, not one 256-way softmax) on the same tokens:
        # rollout minus repeat-last-frame +0.41, +1.20, +1.31, +1.28 dB on validation against
        # -0.22, +0.78, +0.98, +1.01 (docs/ablations/dynamics.md item 9).
        # Each FSQ digit trained toward a Gaussian of sigma 0.5 levels around the true level
        # (`digit_target_sigma`): validation rollout minus repeat-last-frame +0.76, +1.86,
        # +2.32, +2.56 dB at t = 1..4 against +0.51, +1.42, +1.73, +1.85 with one-hot targets,
        # ΔtPSNR@4 2.26 against 1.75 (256 clips; docs/ablations/dynamics.md, item 14). It also
        # made the 8^6 tokenizer pay: on its tokens +0.78, +1.50, +1.84, +1.98 dB and +0.58,
        # +1.27, +1.46, +1.52 on two seeds (ΔtPSNR@4 2.08 and 1.75), where one-hot targets on
        # the 2600-step 8^6 tokens gave +0.26, +0.71, +0.83, +0.82 (1.11; item 16).
        dynamics=DynamicsConfig(
            transformer=small,
            maskgit_steps=8,
            copy_logit=6.0,
            factorized_head=True,
            digit_target_sigma=0.5,
        ),
        # More, smaller steps reconstruct better per CPU-second (docs/ablations/tokenizer.md:
        # validation PSNR 21.1 dB at 2000 x 4 against 20.3 at 1200 x 4 and 19.7 at 600 x 8).
        # 3e-3 suits FSQ (8^4: 23.2 dB against 22.8 at 1e-3; 8e-3 broke down); 3400 steps for
        # 8^6 (24.6 dB against 24.3 at 2600) cost the demo about a minute more.
        train_tokenizer=TrainConfig(
            batch_size=4,
            steps=3400,
            learning_rate=3e-3,
            warmup_steps=100,
            image_every=1700,
            checkpoint_every=1700,
        ),
        train_lam=lam_schedule,
        # 1600 x 8 was the dynamics ablation's best row on validation (rollout minus repeat-
        # last-frame -0.9, +0.4, +0.8, +0.8 dB at t = 1..4, ΔtPSNR@4 0.58 dB; more steps won
        # throughout that table); 1900 since huge pages made steps faster.
        train_dynamics=TrainConfig(
            batch_size=8,
            steps=1900,
            learning_rate=3e-3,
            warmup_steps=50,
            image_every=950,
            checkpoint_every=950,
        ),
        # `genie train lam_dynamics` (co-training, instead of the lam and dynamics stages): the
        # LAM's schedule, which the dynamics model shares.
        train_lam_dynamics=lam_schedule,
    )
